"""The self-test a bundle ships: no training text in it, and it exercises every length bucket and label."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.bundle import load_bundle
from core.engine import InferenceEngine
from core.exceptions import StoreError
from core.model_store import ModelStore, resolve_model
from core.selftest import bucket_of, length_buckets
from training.data import load_dataset

pytestmark = pytest.mark.slow
RUN = 8  # no run of this many ids of real text ships (shuffled bags only)


def encoded(ids) -> str:
    return "," + ",".join(map(str, ids)) + ","


def test_self_test_inputs_contain_no_document_and_cover_lengths_and_labels(tiny_bundle_dir: Path,
                                                                          news_data: str) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    test, info = bundle.self_test, bundle.manifest["self_test"]
    assert test is not None and 24 <= len(test.inputs) <= 64
    max_len = bundle.preprocessing.max_len
    # Every document of the archive (a superset of the tiny model's training and validation split).
    data = load_dataset(news_data)
    sequences = [bundle.vocab.token_ids(t, 10**6) for t in (*data.train_texts, *data.test_texts)]
    truncated = {tuple(s[:max_len]) for s in sequences}
    corpus = "\n".join(encoded(s) for s in sequences)
    for ids in test.inputs:
        if len(ids) > 1:
            assert ids not in truncated, "a self-test input is a document's own token sequence"
        if len(ids) >= RUN:
            assert encoded(ids) not in corpus, f"a run of {len(ids)} ids of real text ships in the bundle"
    lengths = [len(x) for x in test.inputs]
    buckets = length_buckets(max_len)
    assert {bucket_of(n, buckets) for n in lengths} == set(range(len(buckets)))
    assert min(lengths) == 1 and max(lengths) == max_len
    assert [b["inputs"] for b in info["length_buckets"]] == [
        sum(bucket_of(n, buckets) == b for n in lengths) for b in range(len(buckets))]
    argmax = {bundle.labels[i] for i in np.asarray(test.expected).argmax(axis=1)}
    assert set(info["labels_covered"]) == argmax
    assert set(info["labels_covered"]) | set(info["labels_never_argmax"]) == set(bundle.labels)
    assert info["tolerance"] == 1e-4 and info["reference"] == "pytorch"
    # Argmax can never flip within the tolerance: each expectation's top-1 margin is far above it.
    top2 = np.sort(np.asarray(test.expected), axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 10 * info["tolerance"]


def test_self_test_result_is_exposed_on_the_engine(tiny_bundle_dir: Path) -> None:
    engine = InferenceEngine(load_bundle(tiny_bundle_dir), provider="cpu", threads=3)
    assert engine.self_test_result is None  # measured only when asked: open_verified asks
    result = engine.self_test()
    assert result is engine.self_test_result and result.passed and result.provider == "cpu"
    assert result.n == len(engine.bundle.self_test.inputs) and result.max_abs_diff <= 1e-4
    engine.close()


def make_version(store: Path, version: str) -> None:
    (store / version).mkdir(parents=True)
    (store / version / "manifest.json").write_text("{}")  # listing and promotion read no further


def test_previous_walks_back_through_promotions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for version in ("1", "2", "10"):
        make_version(tmp_path, version)
    assert store.versions() == ["1", "2", "10"] and store.current_version() is None
    store.promote("1", action="export")
    assert store.promote("2", only_if_empty=True) is None and store.current_version() == "1"
    store.promote("2")
    store.promote("10")
    assert store.previous() == "2"
    store.rollback()
    assert (store.current_version(), store.previous()) == ("2", "1")
    store.rollback()
    assert (store.current_version(), store.previous()) == ("1", None)
    with pytest.raises(StoreError, match="nothing to roll back to"):
        store.rollback()
    assert [e["action"] for e in store.history()] == ["export", "promote", "promote", "rollback", "rollback"]


def test_a_refusing_check_leaves_current_and_history_alone(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    make_version(tmp_path, "1")
    make_version(tmp_path, "2")
    store.promote("1")

    def refuse(path: Path) -> dict:
        raise StoreError(f"{path} refused")

    with pytest.raises(StoreError, match="refused"):
        store.promote("2", verify=refuse)
    assert store.current_version() == "1" and len(store.history()) == 1
    with pytest.raises(StoreError, match="no version '3'"):
        store.promote("3")
    with pytest.raises(StoreError, match="invalid version"):
        store.promote("../1")


def test_resolve_model_accepts_a_bundle_or_a_store(tmp_path: Path) -> None:
    make_version(tmp_path / "store", "1")
    assert resolve_model(tmp_path / "store" / "1") == (tmp_path / "store" / "1", None)
    with pytest.raises(StoreError, match="neither a bundle nor a model store .* give the bundle folder itself"):
        resolve_model(tmp_path / "store")
    (tmp_path / "store" / "CURRENT").write_text("1\n")
    path, store = resolve_model(tmp_path / "store")
    assert path == tmp_path / "store" / "1" and store is not None and store.current_version() == "1"
    (tmp_path / "store" / "CURRENT").write_text("../../etc\n")
    with pytest.raises(StoreError, match="does not name a version"):
        resolve_model(tmp_path / "store")


def test_the_store_api_needs_only_the_standard_library() -> None:
    code = ("import sys; import core.model_store as m, core.bundle as b; "
            "assert m.MANIFEST_FILE == b.MANIFEST_FILE")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    alone = "import sys, core.model_store; assert not {'numpy', 'torch', 'onnxruntime'} & set(sys.modules), sys.modules"
    result = subprocess.run([sys.executable, "-c", alone], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
