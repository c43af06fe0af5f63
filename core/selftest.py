"""The self-test a bundle carries: a few dozen token-id inputs and the probabilities the exporter expected.

A checksum proves the files are the ones exported; it cannot prove that *this*
ONNX Runtime, on *this* provider and CPU, computes what PyTorch computed. So
every bundle of format 2 ships ``selftest.json`` (covered by the manifest's
checksums) and every consumer runs it through the engine it is about to serve
with (``core.engine.InferenceEngine.self_test``). This module only reads and
writes the file and checks its shape; it imports neither torch nor ONNX Runtime.

The inputs are token ids, never text: shuffled, cut bags of held-out validation
documents, so no training document can be rebuilt from a bundle (docs/models.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.exceptions import BundleError

SELF_TEST_FILE = "selftest.json"
SELF_TEST_FORMAT = "lstm-worker-selftest"
# A self-test is "a few dozen" inputs; anything huge is a hostile or broken file, not a test.
MAX_SELF_TEST_INPUTS = 4096


@dataclass(frozen=True)
class SelfTest:
    """Inputs, the probabilities expected for them, and the fixed batches they are run in.

    The batches are fixed (not the engine's own length-sorted sub-batches) so the result does not
    depend on ``--threads`` or ``--rows-per-call``: a dynamically quantized LSTM scores a row
    differently next to other rows, and the expectation was computed with exactly these batches.
    """

    inputs: tuple[tuple[int, ...], ...]
    expected: tuple[tuple[float, ...], ...]
    batches: tuple[tuple[int, int], ...]
    tolerance: float
    reference: str  # who computed ``expected``: "pytorch" (fp32) or "onnxruntime-cpu" (quantized graphs)


def length_buckets(max_len: int) -> list[tuple[int, int]]:
    """Four equal, inclusive ranges of 1..max_len (fewer when max_len < 4); the self-test covers each."""
    buckets, low = [], 1
    for quarter in range(1, 5):
        high = max_len * quarter // 4
        if high >= low:
            buckets.append((low, high))
            low = high + 1
    return buckets


def bucket_of(length: int, buckets: list[tuple[int, int]]) -> int:
    return next(i for i, (low, high) in enumerate(buckets) if low <= length <= high)


def self_test_bytes(test: SelfTest) -> bytes:
    body = {
        "format": SELF_TEST_FORMAT,
        "inputs": [list(x) for x in test.inputs],
        "expected_probabilities": [list(p) for p in test.expected],
        "batches": [list(b) for b in test.batches],
    }
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def manifest_entry(test: SelfTest, report: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest's ``self_test`` section: where the file is, the tolerance, who computed it, its coverage."""
    return {"file": SELF_TEST_FILE, "tolerance": test.tolerance, "reference": test.reference,
            "inputs": len(test.inputs), **(report or {})}


def _fail(path: Path, why: str) -> BundleError:
    return BundleError(f"{path}: self-test check failed: {why}; re-export the model")


def read_self_test(path: Path, entry: Any, *, max_len: int, vocab_size: int, num_classes: int) -> SelfTest:
    """Parse and shape-check ``selftest.json`` (its checksum was verified by the caller)."""
    if not isinstance(entry, dict):
        raise _fail(path, "the manifest's 'self_test' section is missing or malformed")
    try:
        tolerance, reference = float(entry["tolerance"]), str(entry["reference"])
    except (KeyError, TypeError, ValueError):
        raise _fail(path, "the manifest's 'self_test' needs a numeric 'tolerance' and a 'reference'") from None
    if not (math.isfinite(tolerance) and 0 < tolerance < 1):
        raise _fail(path, f"tolerance {tolerance!r} is not in (0, 1)")
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        inputs = tuple(tuple(int(i) for i in row) for row in body["inputs"])
        expected = tuple(tuple(float(p) for p in row) for row in body["expected_probabilities"])
        batches = tuple((int(start), int(end)) for start, end in body["batches"])
        if body.get("format") != SELF_TEST_FORMAT:
            raise ValueError(f"format is {body.get('format')!r}, not {SELF_TEST_FORMAT!r}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise _fail(path, f"unreadable ({exc})") from None
    if not 0 < len(inputs) <= MAX_SELF_TEST_INPUTS or len(expected) != len(inputs):
        raise _fail(path, f"{len(inputs)} inputs and {len(expected)} expectations (need 1..{MAX_SELF_TEST_INPUTS}, "
                          "one each)")
    if any(not 1 <= len(row) <= max_len or not all(0 <= i < vocab_size for i in row) for row in inputs):
        raise _fail(path, f"an input is empty, longer than max_len {max_len}, or has an id outside the vocabulary")
    if any(len(row) != num_classes or not all(0.0 <= p <= 1.0 for p in row) for row in expected):
        raise _fail(path, f"an expectation is not {num_classes} probabilities in [0, 1]")
    ends = [0, *(end for _, end in batches)]
    if [start for start, _ in batches] != ends[:-1] or ends[-1] != len(inputs) or any(s >= e for s, e in batches):
        raise _fail(path, "its batches do not cover the inputs in order")
    return SelfTest(inputs, expected, batches, tolerance, reference)
