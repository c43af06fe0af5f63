"""The engine's parallel runners: same scores as one runner, input order kept, errors surface."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from core.bundle import load_bundle
from core.engine import InferenceEngine
from core.exceptions import InferenceError
from core.runtime import usable_cpus


@pytest.fixture(scope="module")
def id_lists(tiny_checkpoint_dir: Path, tiny_bundle_dir: Path) -> list[list[int]]:
    bundle = load_bundle(tiny_bundle_dir)
    lines = (tiny_checkpoint_dir / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line][:90] + ["space", "a b"]
    return [bundle.vocab.token_ids(t, bundle.preprocessing.max_len) or [1] for t in texts]


def test_three_runners_score_exactly_like_one(tiny_bundle_dir: Path, id_lists: list[list[int]]) -> None:
    one = InferenceEngine(load_bundle(tiny_bundle_dir), provider="cpu", threads=1)
    three = InferenceEngine(load_bundle(tiny_bundle_dir), provider="cpu", threads=3)
    try:
        assert three.runners == 3
        # Enough groups for every runner, none over the row cap, every document exactly once.
        groups = three.sub_batches([len(x) for x in id_lists])
        assert len(groups) >= 3
        assert sorted(np.concatenate(groups).tolist()) == list(range(len(id_lists)))
        np.testing.assert_allclose(three.predict_proba(id_lists), one.predict_proba(id_lists), atol=1e-6)
        np.testing.assert_allclose(three.predict_proba(id_lists[:2]), one.predict_proba(id_lists[:2]), atol=1e-6)
    finally:
        three.close()


def test_a_failing_group_raises_inference_error(tiny_bundle_dir: Path, id_lists: list[list[int]]) -> None:
    engine = InferenceEngine(load_bundle(tiny_bundle_dir), provider="cpu", threads=2)
    try:
        vocab_size = len(load_bundle(tiny_bundle_dir).vocab)
        broken = [*id_lists[:20], [vocab_size + 10_000]]  # an id outside the embedding table
        with pytest.raises(InferenceError):
            engine.predict_proba(broken)
    finally:
        engine.close()


def test_usable_cpus_is_at_least_one() -> None:
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


def test_the_session_runs_the_verified_bytes_and_leaves_no_file_open(tiny_bundle_dir: Path,
                                                                     id_lists: list[list[int]],
                                                                     tmp_path: Path) -> None:
    """The bytes checked against the manifest are what runs: swapping model.onnx afterwards changes nothing."""
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, copy)
    reference = InferenceEngine(load_bundle(tiny_bundle_dir), provider="cpu", threads=1).predict_proba(id_lists)
    fds_before = set(os.listdir("/proc/self/fd"))
    bundle = load_bundle(copy)
    engine = InferenceEngine(bundle, provider="cpu", threads=1)
    assert set(os.listdir("/proc/self/fd")) <= fds_before, "the in-memory model file is closed again"
    (copy / "model.onnx").write_bytes(b"swapped after verification")
    np.testing.assert_allclose(engine.predict_proba(id_lists), reference, atol=1e-6)
