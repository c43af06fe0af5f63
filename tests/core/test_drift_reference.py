"""The bundle's optional drift reference: typed when present, None for bundles without one, refused when malformed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core.bundle import DRIFT_REFERENCE_KEY, Preprocessing, load_bundle
from core.bundle_writer import write_bundle
from core.drift_reference import QUANTILE_STEPS, DriftReference
from core.vocab import Vocabulary
from tests.core.test_bundle import MODEL_BYTES, SELF_TEST, refused, rewrite_manifest

ENTRY = DriftReference(
    documents=200, predicted_labels={"animals": 0.625, "food": 0.375}, confidence_mean=0.8,
    confidence_quantiles=tuple(0.5 + 0.5 * i / QUANTILE_STEPS for i in range(QUANTILE_STEPS + 1)),
    training_labels={"animals": 0.5, "food": 0.5}, training_labels_source="training split (metrics.json)",
    confidence_histogram={"edges": [0.0, 0.5, 1.0], "shares": [0.0, 1.0]}).to_manifest()


def bundle(directory: Path, extra: dict | None) -> Path:
    vocab = Vocabulary.build(["the cat sat on the mat", "a dog ate the bone"], max_size=50)
    return write_bundle(directory, onnx_model=MODEL_BYTES, vocab=vocab, labels=["animals", "food"],
                        preprocessing=Preprocessing(max_len=32), name="unit", version="1", opset=17,
                        self_test=SELF_TEST, extra=extra)


def test_a_bundle_with_a_reference_loads_it_typed(tmp_path: Path) -> None:
    loaded = load_bundle(bundle(tmp_path / "b", {DRIFT_REFERENCE_KEY: ENTRY})).drift_reference
    assert isinstance(loaded, DriftReference)
    assert loaded.predicted_labels == {"animals": 0.625, "food": 0.375} and loaded.documents == 200
    assert loaded.quantile(0.5) == pytest.approx(0.75) and loaded.share_below(0.75) == pytest.approx(0.5)
    assert loaded.to_manifest() == ENTRY


def test_a_bundle_exported_before_references_still_loads_without_one(tmp_path: Path) -> None:
    assert load_bundle(bundle(tmp_path / "b", None)).drift_reference is None


@pytest.mark.parametrize("edit, why", [
    (lambda r: r.update(predicted_labels={"animals": 0.5, "cars": 0.5}), "predicted_labels"),
    (lambda r: r.update(training_labels={"animals": 0.9, "food": 0.9}), "add up to 1"),
    (lambda r: r["confidence"].update(quantiles=[0.9, 0.1] + [1.0] * (QUANTILE_STEPS - 1)), "non-decreasing"),
    (lambda r: r["confidence"].update(quantiles=[0.5]), "non-decreasing"),
    (lambda r: r.pop("confidence"), "missing"),
    (lambda r: r.update(documents=0), "documents must be positive"),
])
def test_a_malformed_reference_is_refused(tmp_path: Path, edit: Callable[[dict], None], why: str) -> None:
    path = bundle(tmp_path / "b", {DRIFT_REFERENCE_KEY: ENTRY})
    rewrite_manifest(path, lambda manifest: edit(manifest[DRIFT_REFERENCE_KEY]))
    message = refused(path)
    assert "drift reference check failed" in message and why in message
