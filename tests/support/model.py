"""The tiny real model the test session trains, and the console scripts beside this interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    "--no-baseline", "--seed", "0", "--device", "cpu", "--members", "1", "--bow-weight", "0",
]


def run_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run one of the console scripts installed beside this interpreter."""
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout)
