"""Fixtures shared by every test package: real data, a tiny real model, its bundle.

The tiny model is trained once per session on a sample of the real 20
Newsgroups archive through the real ``lstm-train`` CLI, and exported through
the real ``lstm-export`` CLI, so every downstream test exercises the contract
end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Small enough for CI (about a minute on 2 cores), big enough for a real
# validation split of > 512 documents for the export parity gate. Without label
# smoothing and distillation: the export tests' int8 gate cases were calibrated on
# this model (smoothing flattens its scores, and its int8 copy then drops 0.8 points,
# past the gate); tests/training/test_teacher.py covers those two features.
TINY_TRAIN_ARGS = [
    "--epochs", "2", "--max-len", "64", "--embed-dim", "32", "--hidden-size", "32",
    "--vocab-size", "5000", "--max-train-samples", "4000", "--val-fraction", "0.15",
    "--label-smoothing", "0", "--distill-weight", "0",
    "--no-baseline", "--seed", "0", "--device", "cpu", "--members", "1",
]


def find_news_archive() -> Path | None:
    candidates = [os.environ.get("LSTM_TRAIN_DATA", ""), str(REPO_ROOT.parent / "shared/data/20news-bydate.tar.gz")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def news_archive() -> Path:
    """The real 20 Newsgroups bydate archive (LSTM_TRAIN_DATA or ../shared/data)."""
    archive = find_news_archive()
    if archive is None:
        message = "20 Newsgroups archive not found: set LSTM_TRAIN_DATA to 20news-bydate.tar.gz"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return archive


def run_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run one of the console scripts installed beside this interpreter."""
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(news_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-train")
    result = run_cli("lstm-train", "--data", str(news_archive), "--output", str(out), *TINY_TRAIN_ARGS)
    assert result.returncode == 0, f"lstm-train failed:\n{result.stdout}\n{result.stderr}"
    return out


@pytest.fixture(scope="session")
def tiny_bundle_dir(tiny_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-bundle") / "bundle"
    result = run_cli("lstm-export", "--checkpoint", str(tiny_checkpoint_dir), "--output", str(out))
    assert result.returncode == 0, f"lstm-export failed:\n{result.stdout}\n{result.stderr}"
    return out
