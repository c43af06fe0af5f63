"""The bundle loader refuses every kind of broken bundle, naming the file and the failed check.

A synthetic bundle (real vocabulary and labels, placeholder model bytes) is
enough here: the loader verifies files before ONNX Runtime ever sees them.
The export tests check real exported bundles and the classify tests check
that a tampered one is refused end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from core.bundle import (
    BUNDLE_FORMAT_VERSION,
    LABELS_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    VOCAB_FILE,
    Preprocessing,
    load_bundle,
    manifest_digest,
)
from core.bundle_writer import write_bundle
from core.exceptions import BundleError
from core.selftest import SELF_TEST_FILE, SelfTest, length_buckets
from core.vocab import Vocabulary

MODEL_BYTES = b"\x08\x07" + bytes(range(256)) * 16  # stands in for ONNX bytes: never parsed by the loader
SELF_TEST = SelfTest(inputs=((2, 3, 4), (5,)), expected=((0.9, 0.1), (0.2, 0.8)), batches=((0, 1), (1, 2)),
                     tolerance=1e-4, reference="pytorch")


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    vocab = Vocabulary.build(["the cat sat on the mat", "a dog ate the bone"], max_size=50)
    return write_bundle(
        tmp_path / "bundle",
        onnx_model=MODEL_BYTES,
        vocab=vocab,
        labels=["animals", "food"],
        preprocessing=Preprocessing(max_len=32),
        name="unit",
        version="3",
        opset=17,
        model_config={"embed_dim": 8, "hidden_size": 4, "num_layers": 1, "bidirectional": True},
        metrics={"test": {"accuracy": 0.5}},
        parity={"passed": True},
        self_test=SELF_TEST,
        self_test_report={"labels_never_argmax": []},
    )


def rewrite_manifest(bundle: Path, edit: Callable[[dict], None], redigest: bool = True) -> None:
    """Edit the manifest; with ``redigest`` the digest is recomputed so the *next* check is the one that trips."""
    path = bundle / MANIFEST_FILE
    manifest = json.loads(path.read_text(encoding="utf-8"))
    edit(manifest)
    if redigest:
        manifest["manifest_sha256"] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")


def refused(bundle: Path) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    return str(info.value)


def test_round_trip(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.model_id == "unit@3"
    assert bundle.labels == ("animals", "food")
    assert bundle.preprocessing == Preprocessing(max_len=32)
    assert bundle.model_path.read_bytes() == MODEL_BYTES
    assert bundle.manifest["model"]["config"]["hidden_size"] == 4
    assert bundle.manifest["format_version"] == BUNDLE_FORMAT_VERSION
    assert set(bundle.manifest["files"]) == {MODEL_FILE, VOCAB_FILE, LABELS_FILE, SELF_TEST_FILE}
    assert bundle.self_test == SELF_TEST
    assert bundle.manifest["self_test"]["tolerance"] == 1e-4 and bundle.manifest["self_test"]["inputs"] == 2
    assert bundle.vocab.token_ids("the cat", 32) == load_bundle(bundle_dir).vocab.token_ids("the cat", 32)


def test_flipped_byte_is_refused_by_sha256(bundle_dir: Path) -> None:
    data = bytearray((bundle_dir / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle_dir / MODEL_FILE).write_bytes(bytes(data))
    message = refused(bundle_dir)
    assert MODEL_FILE in message and "sha256" in message


def test_truncated_file_is_refused_by_size(bundle_dir: Path) -> None:
    data = (bundle_dir / MODEL_FILE).read_bytes()
    (bundle_dir / MODEL_FILE).write_bytes(data[:-10])
    message = refused(bundle_dir)
    assert MODEL_FILE in message and "size check failed" in message and "truncated" in message


@pytest.mark.parametrize("missing", [VOCAB_FILE, LABELS_FILE, MODEL_FILE])
def test_missing_file_is_refused(bundle_dir: Path, missing: str) -> None:
    (bundle_dir / missing).unlink()
    message = refused(bundle_dir)
    assert missing in message and "presence check failed" in message


def test_missing_manifest_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST_FILE).unlink()
    message = refused(bundle_dir)
    assert MANIFEST_FILE in message and "not a model bundle" in message


def test_edited_manifest_is_refused_by_its_digest(bundle_dir: Path) -> None:
    rewrite_manifest(bundle_dir, lambda m: m["preprocessing"].update(max_len=9999), redigest=False)
    message = refused(bundle_dir)
    assert MANIFEST_FILE in message and "manifest digest check failed" in message


def test_edited_checksum_is_refused(bundle_dir: Path) -> None:
    rewrite_manifest(bundle_dir, lambda m: m["files"][VOCAB_FILE].update(sha256="0" * 64))
    message = refused(bundle_dir)
    assert VOCAB_FILE in message and "sha256" in message


def test_wrong_format_version_is_refused(bundle_dir: Path) -> None:
    rewrite_manifest(bundle_dir, lambda m: m.update(format_version=BUNDLE_FORMAT_VERSION + 1))
    message = refused(bundle_dir)
    assert MANIFEST_FILE in message and "format version check failed" in message and "re-export" in message


def test_invalid_manifest_json_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST_FILE).write_text("{not json", encoding="utf-8")
    message = refused(bundle_dir)
    assert MANIFEST_FILE in message and "not valid JSON" in message


def test_path_traversal_in_files_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "x"
    outside.write_bytes(b"outside the bundle")
    rewrite_manifest(bundle_dir, lambda m: m["files"].update({"../x": {"sha256": "0" * 64, "bytes": 18}}))
    message = refused(bundle_dir)
    assert "'../x'" in message and "path check failed" in message and "outside the bundle" in message


def test_path_traversal_as_model_file_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    shutil.copy(bundle_dir / MODEL_FILE, tmp_path / "stolen.onnx")
    entry = json.loads((bundle_dir / MANIFEST_FILE).read_text())["files"][MODEL_FILE]

    def point_outside(manifest: dict) -> None:
        manifest["model"]["file"] = "../stolen.onnx"
        manifest["files"]["../stolen.onnx"] = entry

    rewrite_manifest(bundle_dir, point_outside)
    message = refused(bundle_dir)
    assert "../stolen.onnx" in message and "path check failed" in message


def test_absolute_path_is_refused(bundle_dir: Path) -> None:
    rewrite_manifest(bundle_dir, lambda m: m.update(labels_file="/etc/passwd"))
    assert "path check failed" in refused(bundle_dir)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_leaving_the_bundle_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    shutil.move(bundle_dir / LABELS_FILE, target)
    (bundle_dir / LABELS_FILE).symlink_to(target)
    message = refused(bundle_dir)
    assert LABELS_FILE in message and "outside the bundle" in message


def test_labels_must_match_num_classes(bundle_dir: Path) -> None:
    (bundle_dir / LABELS_FILE).write_text('["only-one"]', encoding="utf-8")
    rewrite_manifest(bundle_dir, lambda m: m["files"][LABELS_FILE].update(
        sha256=__import__("hashlib").sha256(b'["only-one"]').hexdigest(), bytes=12))
    message = refused(bundle_dir)
    assert LABELS_FILE in message and "labels check failed" in message


def test_not_a_directory(tmp_path: Path) -> None:
    assert "not a directory" in refused(tmp_path / "nothing-here")


def test_write_refuses_non_empty_directory(bundle_dir: Path) -> None:
    with pytest.raises(BundleError, match="not empty"):
        write_bundle(bundle_dir, onnx_model=b"x", vocab=Vocabulary(("<pad>", "<unk>")), labels=["a"],
                     preprocessing=Preprocessing(8), name="n", version="1", opset=17)


def test_loader_is_torch_free(bundle_dir: Path) -> None:
    code = (
        "import sys; from core.bundle import load_bundle; "
        f"load_bundle({str(bundle_dir)!r}); "
        "assert 'torch' not in sys.modules, 'core.bundle imported torch'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_model_swapped_after_loading_is_never_served(tiny_bundle_dir, tmp_path) -> None:
    """The engine runs the bytes it verified, not whatever lies at the path later."""
    from core.bundle import load_bundle
    from core.engine import InferenceEngine
    from core.exceptions import EngineError

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, copy)
    bundle = load_bundle(copy)
    model = copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(EngineError, match="sha256"):
        InferenceEngine(bundle, provider="cpu")


def test_a_format_1_bundle_without_self_test_still_loads(tmp_path: Path) -> None:
    """Bundles exported before self-tests keep working; the worker warns that they are unchecked."""
    vocab = Vocabulary.build(["the cat sat"], max_size=50)
    old = write_bundle(tmp_path / "old", onnx_model=MODEL_BYTES, vocab=vocab, labels=["a", "b"],
                       preprocessing=Preprocessing(max_len=8), name="old", version="1", opset=17)
    bundle = load_bundle(old)
    assert bundle.manifest["format_version"] == 1 and "self_test" not in bundle.manifest
    assert bundle.self_test is None


def test_a_format_2_bundle_stripped_of_its_self_test_is_refused(bundle_dir: Path) -> None:
    def strip(manifest: dict) -> None:
        del manifest["self_test"]
        del manifest["files"][SELF_TEST_FILE]

    rewrite_manifest(bundle_dir, strip)
    assert "self-test check failed" in refused(bundle_dir)


def test_a_self_test_file_edited_after_export_is_refused_by_its_checksum(bundle_dir: Path) -> None:
    path = bundle_dir / SELF_TEST_FILE
    path.write_text(path.read_text().replace("0.9", "0.8"))
    message = refused(bundle_dir)
    assert SELF_TEST_FILE in message and "sha256" in message


@pytest.mark.parametrize(("edit", "why"), [
    (lambda b: b.update(inputs=[[2, 3, 4], []]), "empty"),
    (lambda b: b.update(inputs=[[2, 3, 4], [10_000]]), "outside the vocabulary"),
    (lambda b: b.update(expected_probabilities=[[0.9, 0.1]]), "expectations"),
    (lambda b: b.update(expected_probabilities=[[0.9, 0.1], [0.5]]), "probabilities"),
    (lambda b: b.update(batches=[[0, 1]]), "batches"),
    (lambda b: b.update(format="other"), "unreadable"),
])
def test_a_malformed_self_test_is_refused(bundle_dir: Path, edit: Callable[[dict], None], why: str) -> None:
    """Shape errors are refused at load, naming the file, even when the checksums were recomputed."""
    path = bundle_dir / SELF_TEST_FILE
    body = json.loads(path.read_text())
    edit(body)
    path.write_text(json.dumps(body))
    data = path.read_bytes()
    rewrite_manifest(bundle_dir, lambda m: m["files"][SELF_TEST_FILE].update(
        sha256=__import__("hashlib").sha256(data).hexdigest(), bytes=len(data)))
    message = refused(bundle_dir)
    assert SELF_TEST_FILE in message and "self-test check failed" in message and why in message


@pytest.mark.parametrize(("max_len", "expected"), [
    (64, [(1, 16), (17, 32), (33, 48), (49, 64)]),
    (10, [(1, 2), (3, 5), (6, 7), (8, 10)]),
    (2, [(1, 1), (2, 2)]),
    (1, [(1, 1)]),
])
def test_length_buckets_split_one_to_max_len(max_len: int, expected: list) -> None:
    assert length_buckets(max_len) == expected
