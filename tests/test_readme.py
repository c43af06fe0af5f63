"""The README is the user's manual: its CLI reference must be the commands' real --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_matches_help() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts/readme_cli.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_shows_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme


def test_every_command_answers_version() -> None:
    for command in ("lstm-train", "lstm-export", "lstm-worker"):
        out = subprocess.run([str(Path(sys.executable).parent / command), "--version"],
                             capture_output=True, text=True)
        assert out.returncode == 0 and "version" in out.stdout, (command, out.stdout, out.stderr)
