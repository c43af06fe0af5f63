"""Measure the drift reference a bundle carries (core/drift_reference.py) from what the export already has.

Held-out scores give the predicted-label mix and the top-1 confidence distribution: the published graph's
on the documents the gates score, where those are held out (one LSTM without the branch, or
``--parity-data``). An ensemble's other members and the linear branch trained on ``validation.jsonl``, so
there the graph is sure of nearly every document, and held-out traffic would read as a confidence drop;
its reference comes from lstm-train's out-of-fold predictions instead, calibrated as the graph calibrates.

The training label counts come from ``metrics.json``
(``data.train_label_counts``, written by ``lstm-train``); a checkpoint trained before that has none, and the
gold labels of its validation split stand in (it was drawn stratified from the training documents).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from core.bundle import not_held_out_reasons
from core.drift_reference import CONFIDENCE_BUCKETS, QUANTILE_STEPS, DriftReference

if TYPE_CHECKING:
    from export.checkpoint import Checkpoint

HISTOGRAM_EDGES = (0.0, *CONFIDENCE_BUCKETS, 1.0)  # the bins of the worker's lstm_worker_confidence histogram
SHARE_DIGITS = 6


def training_label_counts(metrics: dict[str, Any], validation_labels: Sequence[str],
                          labels: Sequence[str]) -> tuple[dict[str, int], str]:
    """(counts per label, where they come from): the training split if lstm-train recorded it."""
    recorded = (metrics.get("data") or {}).get("train_label_counts")
    if isinstance(recorded, dict) and recorded and set(recorded) <= set(labels):
        return {label: int(recorded.get(label, 0)) for label in labels}, "training split (metrics.json)"
    counts = Counter(validation_labels)
    return {label: counts.get(label, 0) for label in labels}, \
        "validation split (the checkpoint's metrics.json has no training label counts)"


def held_out_probabilities(graph_scores: np.ndarray, checkpoint: Checkpoint, documents_given: bool) -> tuple[
        np.ndarray, str]:
    """The probabilities to measure the reference on, and where they come from (see the module's docstring)."""
    trained_on = {"model": {"config": checkpoint.model_config.to_dict()},
                  "source": {"train_config": checkpoint.provenance.get("train_config") or {}}}
    if documents_given or checkpoint.held_out_probabilities is None or not not_held_out_reasons(trained_on):
        return graph_scores, "held-out documents scored by the published graph"
    return (checkpoint.calibration.apply(checkpoint.held_out_probabilities),
            "lstm-train's out-of-fold predictions, calibrated (validation.jsonl is not held out)")


def measure(probabilities: np.ndarray, labels: Sequence[str], training_counts: dict[str, int],
            training_source: str) -> DriftReference:
    """The reference from the published graph's probabilities [documents, labels] on held-out documents."""
    if probabilities.ndim != 2 or probabilities.shape[0] == 0 or probabilities.shape[1] != len(labels):
        raise ValueError(f"expected probabilities of shape [documents > 0, {len(labels)}], got {probabilities.shape}")
    top = probabilities.max(axis=1).astype(np.float64)
    predicted = np.bincount(probabilities.argmax(axis=1), minlength=len(labels)) / len(top)
    total = sum(training_counts.values())
    if total <= 0:
        raise ValueError("no training label counts")
    histogram, _ = np.histogram(np.clip(top, 0.0, 1.0), bins=HISTOGRAM_EDGES)
    return DriftReference(
        documents=int(len(top)),
        predicted_labels={label: round(float(share), SHARE_DIGITS) for label, share in zip(labels, predicted,
                                                                                             strict=True)},
        confidence_mean=round(float(top.mean()), SHARE_DIGITS),
        confidence_quantiles=tuple(round(float(q), SHARE_DIGITS)
                                   for q in np.quantile(top, np.linspace(0, 1, QUANTILE_STEPS + 1))),
        training_labels={label: round(training_counts.get(label, 0) / total, SHARE_DIGITS) for label in labels},
        training_labels_source=training_source,
        confidence_histogram={"edges": list(HISTOGRAM_EDGES),
                              "shares": [round(float(c) / len(top), SHARE_DIGITS) for c in histogram]},
    )


def reference_for(probabilities: np.ndarray, labels: Sequence[str], metrics: dict[str, Any],
                  validation_labels: Sequence[str]) -> dict[str, Any]:
    """The manifest entry for the published graph's held-out ``probabilities``."""
    counts, source = training_label_counts(metrics, validation_labels, labels)
    return measure(probabilities, labels, counts, source).to_manifest()
