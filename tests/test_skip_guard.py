"""`--only-listed-skips` (make test, make faults): a skip for a reason the user could fix fails the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TESTS = '''
import pytest

def test_runs():
    assert True

def test_skips_for_a_listed_reason():
    pytest.skip("a GPU is present")
'''


def run_pytest(folder: Path, body: str, *options: str) -> subprocess.CompletedProcess:
    (folder / "test_example.py").write_text(TESTS + body)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.support.skips",
                           "--rootdir", str(folder), *options, str(folder)], capture_output=True, text=True,
                          cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)


def test_a_skip_off_the_list_fails_the_run_and_is_named(tmp_path: Path) -> None:
    body = "\ndef test_needs_data():\n    pytest.skip('sms-spam.tsv not found')\n"
    result = run_pytest(tmp_path, body, "--only-listed-skips")
    assert result.returncode == 1, result.stdout
    assert "skips not on the allow-list" in result.stdout
    assert "test_needs_data: sms-spam.tsv not found" in result.stdout
    assert "test_skips_for_a_listed_reason" not in result.stdout.split("allow-list")[-1]


def test_listed_skips_pass(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, "", "--only-listed-skips")
    assert result.returncode == 0, result.stdout
    assert "1 passed, 1 skipped" in result.stdout


def test_without_the_option_a_skip_is_only_reported(tmp_path: Path) -> None:
    body = "\ndef test_needs_data():\n    pytest.skip('sms-spam.tsv not found')\n"
    assert run_pytest(tmp_path, body).returncode == 0
