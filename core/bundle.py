"""The model bundle: a directory with an ONNX model, vocabulary, labels and a manifest.

``load_bundle`` is used by everything that serves a model; ``lstm-export`` writes
bundles with ``core.bundle_writer``. The loader trusts nothing: it checks the format version, that
every file named by the manifest lies inside the bundle, the manifest's own
digest, and every file's size and sha256 before any byte of the model is
handed to ONNX Runtime. Nothing here unpickles: the bundle is JSON + ONNX.

Format 2 adds a self-test (``core.selftest``): inputs and the probabilities
the exporter expected, which every consumer re-computes with the engine it
serves with. Format 1 bundles (exported before it) still load; they carry
no self-test and the worker says so. A bundle exported with attributions names
them in ``model.attributions`` (``--explain``); one exported before them still
loads and serves plain predictions.

The checksums detect corruption and accidental edits, not a deliberate
attacker who rewrites the manifest too; sign the bundle (or its digest)
outside this tool when you need authenticity.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.drift_reference import MANIFEST_KEY as DRIFT_REFERENCE_KEY
from core.drift_reference import DriftReference, read_drift_reference
from core.exceptions import BundleError, VocabularyError
from core.selftest import SelfTest, read_self_test
from core.text import TOKENIZER_NAME
from core.vocab import Vocabulary

BUNDLE_FORMAT = "lstm-worker-bundle"
# 2: carries a self-test (required). 1: exported before self-tests; still served, with a warning.
BUNDLE_FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (1, 2)
MANIFEST_FILE = "manifest.json"
MODEL_FILE, VOCAB_FILE, LABELS_FILE = "model.onnx", "vocab.json", "labels.json"
INPUT_IDS, INPUT_LENGTHS, OUTPUT_PROBABILITIES = "input_ids", "lengths", "probabilities"
# Per-position attributions for the predicted label, computed only when the boolean input is fed true
# (export/explain_graph.py). Bundles exported before them have neither and still serve plain predictions.
INPUT_EXPLAIN, OUTPUT_ATTRIBUTIONS = "explain", "attributions"
MANIFEST_DIGEST_KEY = "manifest_sha256"
# A manifest is a few KiB; refusing huge ones keeps a hostile file from exhausting memory.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


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
    self_test: SelfTest | None = None  # None only for format 1 bundles
    # What outputs looked like at export (core/drift_reference.py); None for bundles exported before it.
    drift_reference: DriftReference | None = None

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["model"]["file"]

    def read_model(self) -> bytes:
        """The model's bytes, checked against the manifest's sha256 once more.

        Whoever serves the model hands these verified bytes to ONNX Runtime
        instead of the path, so a file swapped after :func:`load_bundle`
        checked it can never be the one that runs.
        """
        data = self.model_path.read_bytes()
        expected = self.manifest["files"][self.manifest["model"]["file"]]["sha256"]
        if hashlib.sha256(data).hexdigest() != expected:
            raise BundleError(f"{self.model_path}: sha256 checksum check failed; the model changed after loading")
        return data

    @property
    def input_names(self) -> tuple[str, str]:
        """The ONNX graph's inputs: (token ids, lengths)."""
        inputs = self.manifest["model"]["inputs"]
        return str(inputs["ids"]), str(inputs["lengths"])

    @property
    def output_name(self) -> str:
        return str(self.manifest["model"]["output"])

    @property
    def attribution_names(self) -> tuple[str, str] | None:
        """(the boolean input that asks for attributions, their output); None for bundles exported without."""
        entry = self.manifest["model"].get("attributions")
        return None if entry is None else (str(entry["input"]), str(entry["output"]))

    @property
    def calibrated(self) -> bool:
        """Whether the graph returns calibrated probabilities (bundles exported before calibration do not)."""
        calibration = self.manifest["model"].get("calibration")
        return isinstance(calibration, dict) and calibration.get("method", "none") != "none"

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


def not_held_out_reasons(manifest: dict[str, Any]) -> list[str]:
    """Why the validation accuracy lstm-export measured is not a held-out score (none: it is)."""
    model_config = manifest["model"]["config"]
    train_config = (manifest.get("source") or {}).get("train_config") or {}
    reasons = []
    if train_config.get("val_fraction") == 0:
        reasons.append("trained with --val-fraction 0 on every training post, so only --parity-data "
                       "documents outside its training data are held out")
    elif model_config.get("members", 1) > 1:
        reasons.append("an ensemble's other members trained on member 1's validation fold")
    if model_config.get("bow_weight", 0.0) > 0:
        reasons.append("the bag-of-words branch was fitted on every training post")
    return reasons


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its own digest field."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST_KEY}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _inside(root: Path, name: object, manifest_path: Path) -> Path:
    """Resolve ``name`` under ``root`` and refuse anything that escapes it (``..``, absolute, symlinks)."""
    if not isinstance(name, str) or not name or os.path.isabs(name) or "\x00" in name:
        raise BundleError(f"{manifest_path}: path check failed: invalid file path {name!r}")
    candidate = (root / name).resolve()
    if root not in candidate.parents:
        raise BundleError(f"{manifest_path}: path check failed: {name!r} points outside the bundle; refused")
    return candidate


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the bundle at ``path``, digest-checked but without hashing the files (cheap: listings)."""
    return _read_manifest(Path(path).resolve())[1]


def _read_manifest(root: Path) -> tuple[Path, dict[str, Any]]:
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: presence check failed: missing; {root} is not a model bundle")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path}: size check failed: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: JSON check failed: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path}: format check failed: not a {BUNDLE_FORMAT} manifest")
    if manifest.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleError(
            f"{manifest_path}: format version check failed: version {manifest.get('format_version')!r} "
            f"is not supported (this version reads {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}); "
            "re-export the model, or upgrade lstm-worker"
        )
    if manifest.get(MANIFEST_DIGEST_KEY) != manifest_digest(manifest):
        raise BundleError(
            f"{manifest_path}: manifest digest check failed: the manifest was edited after export; "
            "re-export the model instead of editing its manifest"
        )
    return manifest_path, manifest


def _verify_file(root: Path, manifest_path: Path, name: str, expected: object) -> None:
    file_path = _inside(root, name, manifest_path)
    if not file_path.is_file():
        raise BundleError(f"{file_path}: presence check failed: missing from the bundle (incomplete copy?)")
    try:
        size, digest = int(expected["bytes"]), str(expected["sha256"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{manifest_path}: checksum entry for {name!r} is malformed") from None
    actual_size = file_path.stat().st_size
    if actual_size != size:
        raise BundleError(
            f"{file_path}: size check failed ({actual_size} bytes, manifest says {size}); "
            "the bundle is truncated or modified"
        )
    if sha256_file(file_path) != digest:
        raise BundleError(f"{file_path}: sha256 checksum check failed; the file was modified or corrupted")


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle; raise :class:`BundleError` naming the file and failed check."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"model bundle not found: {root} is not a directory (run lstm-export to create one)")
    root = root.resolve()
    manifest_path, manifest = _read_manifest(root)
    try:
        files = manifest["files"]
        model_file, vocab_file, labels_file = manifest["model"]["file"], manifest["vocab_file"], manifest["labels_file"]
        prep = manifest["preprocessing"]
        preprocessing = Preprocessing(int(prep["max_len"]), bool(prep["lowercase"]), str(prep["tokenizer"]))
        num_classes = int(manifest["model"]["num_classes"])
        for key in ("name", "version"):
            manifest[key]  # noqa: B018 - presence check
        model = manifest["model"]
        names = [model["inputs"]["ids"], model["inputs"]["lengths"], model["output"]]
        if "attributions" in model:  # optional: bundles exported before explanations lack it
            names += [model["attributions"]["input"], model["attributions"]["output"]]
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"model input/output names must be non-empty strings, got {name!r}")
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{manifest_path}: field check failed: required field missing or malformed: {exc}") from None
    if not isinstance(files, dict):
        raise BundleError(f"{manifest_path}: field check failed: 'files' must map file names to checksums")
    if preprocessing.max_len < 1:
        raise BundleError(f"{manifest_path}: field check failed: preprocessing.max_len must be positive")
    self_test_entry = manifest.get("self_test")
    required_files = [model_file, vocab_file, labels_file]
    if manifest["format_version"] >= 2:  # a format 2 bundle without its self-test was stripped: refuse it
        if not isinstance(self_test_entry, dict) or not isinstance(self_test_entry.get("file"), str):
            raise BundleError(f"{manifest_path}: self-test check failed: a format 2 bundle must name its self-test")
        required_files.append(self_test_entry["file"])
    for required in required_files:
        _inside(root, required, manifest_path)
        if required not in files:
            raise BundleError(f"{manifest_path}: checksum check failed: {required!r} has no checksum; refused")
    for name, expected in files.items():
        _verify_file(root, manifest_path, name, expected)
    if preprocessing.tokenizer != TOKENIZER_NAME:
        raise BundleError(
            f"{manifest_path}: tokenizer check failed: {preprocessing.tokenizer!r} is not {TOKENIZER_NAME!r}; "
            "re-export the model with this version"
        )
    try:
        vocab = Vocabulary.load(root / vocab_file)
    except VocabularyError as exc:
        raise BundleError(f"{root / vocab_file}: vocabulary check failed: {exc}") from None
    try:
        labels = json.loads((root / labels_file).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{root / labels_file}: JSON check failed: not valid JSON ({exc})") from None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) or len(labels) != num_classes:
        raise BundleError(f"{root / labels_file}: labels check failed: must be a list of {num_classes} label strings")
    self_test = None
    if manifest["format_version"] >= 2:
        self_test = read_self_test(root / self_test_entry["file"], self_test_entry, max_len=preprocessing.max_len,
                                   vocab_size=len(vocab), num_classes=num_classes)
    try:
        drift_reference = read_drift_reference(manifest.get(DRIFT_REFERENCE_KEY), tuple(labels))
    except ValueError as exc:
        raise BundleError(f"{manifest_path}: drift reference check failed: {exc}") from None
    return Bundle(root, manifest, vocab, tuple(labels), preprocessing, self_test, drift_reference)
