"""lstm-export writes the drift reference: the training label mix from lstm-train's metrics.json, and the
predicted-label mix and top-1 confidence of the published graph on the held-out documents."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from core.bundle import load_bundle
from core.engine import InferenceEngine
from export.drift_reference import held_out_probabilities, measure, training_label_counts
from training.calibration import METHOD_TEMPERATURE, Calibration


def test_the_bundle_carries_the_reference_of_its_held_out_documents(tiny_bundle_dir: Path,
                                                                     tiny_checkpoint_dir: Path) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    reference = bundle.drift_reference
    assert reference is not None
    validation = [json.loads(line) for line in (tiny_checkpoint_dir / "validation.jsonl").read_text().splitlines()
                  if line.strip()]
    assert reference.documents == len(validation)
    # Recomputed here through the engine a worker serves with.
    engine = InferenceEngine(bundle, provider="cpu", threads=1)
    probabilities = engine.predict_proba([engine.token_ids(row["text"]) for row in validation])
    engine.close()
    predicted = Counter(probabilities.argmax(axis=1).tolist())
    assert reference.predicted_labels == pytest.approx(
        {label: predicted[i] / len(validation) for i, label in enumerate(bundle.labels)}, abs=1e-5)
    assert reference.confidence_mean == pytest.approx(float(probabilities.max(axis=1).mean()), abs=1e-5)
    assert reference.quantile(0.5) == pytest.approx(float(np.median(probabilities.max(axis=1))), abs=1e-5)
    counts = json.loads((tiny_checkpoint_dir / "metrics.json").read_text())["data"]["train_label_counts"]
    assert sum(counts.values()) == 4000  # every labelled training document of --max-train-samples 4000
    assert reference.training_labels == pytest.approx({k: v / sum(counts.values()) for k, v in counts.items()},
                                                      abs=1e-5)
    assert reference.training_labels_source.startswith("training split")
    # One LSTM without the branch: validation.jsonl is its held-out fold, scored by the graph itself.
    assert bundle.manifest["drift_reference_scores"].startswith("held-out documents scored by the published graph")


def test_a_checkpoint_without_training_counts_falls_back_to_its_validation_labels() -> None:
    counts, source = training_label_counts({"data": {"train": 10}}, ["b", "a", "b"], ["a", "b", "c"])
    assert counts == {"a": 1, "b": 2, "c": 0} and source.startswith("validation split")
    counts, source = training_label_counts({"data": {"train_label_counts": {"a": 5, "c": 1}}}, ["b"], ["a", "b", "c"])
    assert counts == {"a": 5, "b": 0, "c": 1} and source.startswith("training split")


def test_measure_refuses_probabilities_that_do_not_fit_the_labels() -> None:
    with pytest.raises(ValueError, match="shape"):
        measure(np.ones((3, 2)) / 2, ["a", "b", "c"], {"a": 1}, "t")
    reference = measure(np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]]), ["a", "b"], {"a": 3, "b": 1}, "t")
    assert reference.predicted_labels == pytest.approx({"a": 1 / 3, "b": 2 / 3}, abs=1e-6)
    assert reference.training_labels == {"a": 0.75, "b": 0.25}
    assert reference.confidence_quantiles[0] == 0.6 and reference.confidence_quantiles[-1] == 0.9
    assert sum(reference.confidence_histogram["shares"]) == pytest.approx(1.0, abs=1e-5)


def test_where_validation_trained_the_model_the_reference_is_its_calibrated_out_of_fold_scores() -> None:
    """An ensemble's graph is sure of validation.jsonl (its other members trained on it): held-out traffic would
    read as a confidence drop against it, so lstm-train's out-of-fold scores, calibrated, stand in."""
    graph = np.array([[0.99, 0.01], [0.02, 0.98]])
    out_of_fold = np.array([[0.6, 0.4], [0.3, 0.7], [0.55, 0.45]], dtype=np.float32)
    calibration = Calibration(0.5, None, METHOD_TEMPERATURE)

    def checkpoint(members: int, bow_weight: float, held_out):
        return SimpleNamespace(model_config=SimpleNamespace(to_dict=lambda: {"members": members,
                                                                             "bow_weight": bow_weight}),
                               provenance={"train_config": {"val_fraction": 0.1}}, calibration=calibration,
                               held_out_probabilities=held_out)

    for members, bow_weight in ((3, 0.0), (1, 0.7), (3, 0.7)):
        scores, source = held_out_probabilities(graph, checkpoint(members, bow_weight, out_of_fold), False)
        np.testing.assert_allclose(scores, calibration.apply(out_of_fold))
        assert "out-of-fold" in source
    # Held out already (one LSTM, or --parity-data), or trained before lstm-train kept its out-of-fold scores.
    for case, given in ((checkpoint(1, 0.0, out_of_fold), False), (checkpoint(3, 0.7, out_of_fold), True),
                        (checkpoint(3, 0.7, None), False)):
        scores, source = held_out_probabilities(graph, case, given)
        assert scores is graph and "published graph" in source
