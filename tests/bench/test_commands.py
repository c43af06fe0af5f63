"""Every benchmark command still starts: a module that no longer imports (a helper renamed in the package)
is found here, not by the next person who runs that benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Run apart from pytest: with tests/ on sys.path, ``worker`` would name the test package.
HELP_EVERY_COMMAND = """
import importlib, sys
import click
failed = []
for name in sys.argv[1:]:
    try:
        command = importlib.import_module(name).main
        assert isinstance(command, click.Command), "main is not a click command"
        command.main(["--help"], prog_name=name, standalone_mode=False)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("FAILED " + " | ".join(failed) if failed else "ALL OK")
"""


def test_every_benchmark_command_imports_and_prints_its_help() -> None:
    modules = sorted(f"bench.{path.stem}" for path in (ROOT / "bench").glob("*.py")
                     if 'if __name__ == "__main__"' in path.read_text(encoding="utf-8"))
    assert len(modules) >= 10  # bench.run, bench.frontier, bench.rolling_restart, ...
    result = subprocess.run([sys.executable, "-c", HELP_EVERY_COMMAND, *modules], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ALL OK"), result.stdout[-2000:]
