"""Writing a model bundle (``lstm-export``): the files, their checksums and the manifest that names them.

The format itself (file names, manifest keys, digests) and its reader live in ``core.bundle``;
what this writes, ``load_bundle`` checks byte for byte.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    INPUT_EXPLAIN,
    INPUT_IDS,
    INPUT_LENGTHS,
    LABELS_FILE,
    MANIFEST_DIGEST_KEY,
    MANIFEST_FILE,
    MODEL_FILE,
    OUTPUT_ATTRIBUTIONS,
    OUTPUT_PROBABILITIES,
    VOCAB_FILE,
    Preprocessing,
    manifest_digest,
    sha256_file,
)
from core.exceptions import BundleError
from core.selftest import SELF_TEST_FILE, SelfTest, manifest_entry, self_test_bytes
from core.vocab import Vocabulary


def write_bundle(
    directory: str | Path,
    *,
    onnx_model: bytes,
    vocab: Vocabulary,
    labels: list[str],
    preprocessing: Preprocessing,
    name: str,
    version: str,
    opset: int,
    quantization: str | None = None,
    model_config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    parity: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    self_test: SelfTest | None = None,
    self_test_report: dict[str, Any] | None = None,
    attributions: bool = True,
    calibration: dict[str, Any] | None = None,
) -> Path:
    """Write a complete bundle into ``directory`` (created; must be empty or absent).

    ``attributions``: the graph has the ``explain`` input and ``attributions`` output of
    ``export.explain_graph`` (every graph ``lstm-export`` writes does). ``calibration``: what the graph
    applies to its probabilities (``training.calibration``); None for a graph that applies none.

    With ``self_test`` the bundle is format 2; without, format 1 (the exporter's scratch bundles,
    which exist only to be gated, are written that way; a published bundle always has one).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise BundleError(f"bundle directory {directory} is not empty")
    (directory / MODEL_FILE).write_bytes(onnx_model)
    vocab.save(directory / VOCAB_FILE)
    (directory / LABELS_FILE).write_text(json.dumps(list(labels), ensure_ascii=False), encoding="utf-8")
    names = [MODEL_FILE, VOCAB_FILE, LABELS_FILE]
    if self_test is not None:
        (directory / SELF_TEST_FILE).write_bytes(self_test_bytes(self_test))
        names.append(SELF_TEST_FILE)
    files = {f: {"sha256": sha256_file(directory / f), "bytes": (directory / f).stat().st_size} for f in names}
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION if self_test is not None else 1,
        "name": name,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "preprocessing": {
            "tokenizer": preprocessing.tokenizer,
            "lowercase": preprocessing.lowercase,
            "max_len": preprocessing.max_len,
        },
        "model": {
            "file": MODEL_FILE,
            "inputs": {"ids": INPUT_IDS, "lengths": INPUT_LENGTHS},
            "output": OUTPUT_PROBABILITIES,
            **({"attributions": {"input": INPUT_EXPLAIN, "output": OUTPUT_ATTRIBUTIONS}} if attributions else {}),
            "opset": opset,
            "quantization": quantization,
            "num_classes": len(labels),
            "config": dict(model_config or {}),
            "calibration": calibration,
        },
        "vocab_file": VOCAB_FILE,
        "labels_file": LABELS_FILE,
        "metrics": metrics or {},
        "parity": parity or {},
        "files": files,
        **(extra or {}),
    }
    if self_test is not None:
        manifest["self_test"] = manifest_entry(self_test, self_test_report)
    manifest[MANIFEST_DIGEST_KEY] = manifest_digest(manifest)
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return directory
