"""Without the real data, `make test` stops at once with one line saying what to set, instead of skipping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=120)


def test_the_makefiles_check_names_the_variable_in_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.tar.gz")
    result = run("-m", "tests.support.datasets", LSTM_TRAIN_DATA=missing, SMS_DATA=str(tmp_path / "missing.tsv"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "LSTM_TRAIN_DATA=" in result.stderr and "SMS_DATA=" in result.stderr
    # `make faults` asks for 20 Newsgroups only.
    assert run("-m", "tests.support.datasets", "news", SMS_DATA=str(tmp_path / "missing.tsv")).returncode == 0


def test_a_session_that_needs_the_data_stops_before_running_anything(tmp_path: Path) -> None:
    result = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/training/test_data.py",
                 LSTM_TRAIN_DATA=str(tmp_path / "missing.tar.gz"))
    assert result.returncode == 2, result.stdout[-2000:]
    assert "LSTM_TRAIN_DATA=" in result.stdout and " passed" not in result.stdout and "skipped" not in result.stdout


def test_a_session_that_does_not_need_it_runs() -> None:
    result = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/training/test_data.py", "-k", "tsv",
                 LSTM_TRAIN_DATA="/nonexistent/20news-bydate.tar.gz")
    assert result.returncode == 0 and " passed" in result.stdout, result.stdout[-2000:]
