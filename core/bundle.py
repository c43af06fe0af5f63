"""The model bundle: a directory with an ONNX model, vocabulary, labels and a manifest.

``write_bundle`` is used by ``lstm-export``; ``load_bundle`` by everything that
serves a model. The loader trusts nothing: it checks the format version, that
every file named by the manifest lies inside the bundle, and every file's size
and sha256 before any byte of the model is handed to ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.exceptions import BundleError, VocabularyError
from core.text import TOKENIZER_NAME
from core.vocab import Vocabulary

BUNDLE_FORMAT = "lstm-worker-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE, VOCAB_FILE, LABELS_FILE = "model.onnx", "vocab.json", "labels.json"
INPUT_IDS, INPUT_LENGTHS, OUTPUT_PROBABILITIES = "input_ids", "lengths", "probabilities"


@dataclass(frozen=True)
class Preprocessing:
    """What the encoder needs to turn text into the ids the model was trained on."""

    max_len: int
    lowercase: bool = True
    tokenizer: str = TOKENIZER_NAME


@dataclass(frozen=True)
class Bundle:
    """A verified bundle; only :func:`load_bundle` should construct one."""

    path: Path
    manifest: dict[str, Any]
    vocab: Vocabulary
    labels: tuple[str, ...]
    preprocessing: Preprocessing

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model"]["file"]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def model_id(self) -> str:
        """``name@version``, the form used in output messages and metrics."""
        return f"{self.name}@{self.version}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    metrics: dict[str, Any] | None = None,
    parity: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a complete bundle into ``directory`` (created; must be empty or absent)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise BundleError(f"bundle directory {directory} is not empty")
    (directory / MODEL_FILE).write_bytes(onnx_model)
    vocab.save(directory / VOCAB_FILE)
    (directory / LABELS_FILE).write_text(json.dumps(list(labels), ensure_ascii=False), encoding="utf-8")
    files = {
        f: {"sha256": sha256_file(directory / f), "bytes": (directory / f).stat().st_size}
        for f in (MODEL_FILE, VOCAB_FILE, LABELS_FILE)
    }
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
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
            "opset": opset,
            "quantization": quantization,
            "num_classes": len(labels),
        },
        "vocab_file": VOCAB_FILE,
        "labels_file": LABELS_FILE,
        "metrics": metrics or {},
        "parity": parity or {},
        "files": files,
        **(extra or {}),
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return directory


def _inside(root: Path, name: str) -> Path:
    """Resolve ``name`` under ``root`` and refuse anything that escapes it (``..``, absolute, symlinks)."""
    if not isinstance(name, str) or not name or os.path.isabs(name):
        raise BundleError(f"manifest names an invalid file path {name!r}")
    candidate = (root / name).resolve()
    if candidate.parent != root and root not in candidate.parents:
        raise BundleError(f"manifest file {name!r} points outside the bundle: refused")
    return candidate


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle; raise :class:`BundleError` naming the file and failed check."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"model bundle not found: {root} is not a directory (run lstm-export to create one)")
    root = root.resolve()
    manifest_path = root / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{manifest_path}: missing; {root} is not a model bundle") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path}: not a {BUNDLE_FORMAT} manifest")
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: format version {manifest.get('format_version')!r} is not supported "
            f"(this version reads {BUNDLE_FORMAT_VERSION}); re-export the model"
        )
    try:
        files = manifest["files"]
        model_file, vocab_file, labels_file = manifest["model"]["file"], manifest["vocab_file"], manifest["labels_file"]
        prep = manifest["preprocessing"]
        preprocessing = Preprocessing(int(prep["max_len"]), bool(prep["lowercase"]), str(prep["tokenizer"]))
        num_classes = int(manifest["model"]["num_classes"])
        for key in ("name", "version"):
            manifest[key]  # noqa: B018 - presence check
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{manifest_path}: required field missing or malformed: {exc}") from None
    if not isinstance(files, dict):
        raise BundleError(f"{manifest_path}: 'files' must map file names to checksums")
    for required in (model_file, vocab_file, labels_file):
        if required not in files:
            raise BundleError(f"{manifest_path}: {required!r} is not covered by a checksum; refused")
    for name, expected in files.items():
        file_path = _inside(root, name)
        if not file_path.is_file():
            raise BundleError(f"{file_path}: missing from the bundle")
        try:
            size, digest = int(expected["bytes"]), str(expected["sha256"])
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{manifest_path}: checksum entry for {name!r} is malformed") from None
        if file_path.stat().st_size != size:
            raise BundleError(
                f"{file_path}: size check failed ({file_path.stat().st_size} bytes, manifest says {size}); "
                "the bundle is truncated or modified"
            )
        if sha256_file(file_path) != digest:
            raise BundleError(f"{file_path}: sha256 checksum mismatch; the bundle was modified or corrupted")
    if preprocessing.tokenizer != TOKENIZER_NAME:
        raise BundleError(
            f"{manifest_path}: tokenizer {preprocessing.tokenizer!r} is not {TOKENIZER_NAME!r}; "
            "re-export the model with this version"
        )
    try:
        vocab = Vocabulary.load(_inside(root, vocab_file))
    except VocabularyError as exc:
        raise BundleError(f"{root / vocab_file}: {exc}") from None
    try:
        labels = json.loads(_inside(root, labels_file).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{root / labels_file}: not valid JSON ({exc})") from None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) or len(labels) != num_classes:
        raise BundleError(f"{root / labels_file}: must be a list of {num_classes} label strings")
    return Bundle(root, manifest, vocab, tuple(labels), preprocessing)
