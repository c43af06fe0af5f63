"""What the model's outputs looked like at export: the reference a worker compares its recent outputs with.

``lstm-export`` measures it on the held-out documents it already scores for its gates and writes it into the
bundle manifest under :data:`MANIFEST_KEY` (``export/drift_reference.py``); the worker's drift gauges
(``worker/drift.py``) compare a sliding window of outputs with it. Bundles exported before it have none and
still load; the worker then exports no drift gauges.

- ``training_labels``: each label's share of the training documents (``training_labels_source`` says where
  the counts came from);
- ``predicted_labels``: each label's share of the model's top-1 predictions on the held-out documents,
  which is what a window of outputs is compared with (a model's predictions are not spread like the truth);
- ``confidence_quantiles``: the top-1 score at 0 %, 1 %, ..., 100 % of the held-out documents, and its mean;
  ``confidence_histogram``: the share of documents per score bin (for people reading the manifest).

Pure Python: the worker and the bundle loader never import numpy for it.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any

MANIFEST_KEY = "drift_reference"
QUANTILE_STEPS = 100  # quantiles at every percent
# The top-1 score bins of the worker's lstm_worker_confidence histogram and of the reference's histogram.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class DriftReference:
    documents: int
    predicted_labels: dict[str, float]
    confidence_mean: float
    confidence_quantiles: tuple[float, ...]  # QUANTILE_STEPS + 1 values, non-decreasing
    training_labels: dict[str, float]
    training_labels_source: str
    confidence_histogram: dict[str, Any]  # {"edges": [...], "shares": [...]}

    def quantile(self, q: float) -> float:
        """The top-1 score below which a share ``q`` of the held-out documents fell (interpolated)."""
        position = min(max(q, 0.0), 1.0) * QUANTILE_STEPS
        low = int(math.floor(position))
        high = min(low + 1, QUANTILE_STEPS)
        values = self.confidence_quantiles
        return values[low] + (values[high] - values[low]) * (position - low)

    def share_below(self, threshold: float) -> float:
        """The share of the held-out documents whose top-1 score was below ``threshold`` (interpolated)."""
        values = self.confidence_quantiles
        if threshold <= values[0]:
            return 0.0
        if threshold > values[-1]:
            return 1.0
        high = bisect.bisect_left(values, threshold)  # values[high - 1] < threshold <= values[high]
        low = high - 1
        span = values[high] - values[low]
        within = (threshold - values[low]) / span if span > 0 else 0.0
        return (low + within) / QUANTILE_STEPS

    def to_manifest(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "predicted_labels": dict(self.predicted_labels),
            "confidence": {"mean": self.confidence_mean, "quantiles": list(self.confidence_quantiles),
                           "histogram": dict(self.confidence_histogram)},
            "training_labels": dict(self.training_labels),
            "training_labels_source": self.training_labels_source,
        }


def _shares(value: object, labels: tuple[str, ...], field: str) -> dict[str, float]:
    if not isinstance(value, dict) or not set(value) <= set(labels):
        raise ValueError(f"{field} must map the bundle's labels to shares")
    shares = {str(k): float(v) for k, v in value.items()}
    if any(not math.isfinite(v) or v < 0 for v in shares.values()) or abs(sum(shares.values()) - 1) > 1e-3:
        raise ValueError(f"{field} must hold non-negative shares that add up to 1")
    return shares


def read_drift_reference(entry: object, labels: tuple[str, ...]) -> DriftReference | None:
    """The manifest's reference, or None when it has none; ``ValueError`` names what is malformed."""
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ValueError(f"{MANIFEST_KEY} must be an object")
    try:
        confidence = entry["confidence"]
        quantiles = tuple(float(x) for x in confidence["quantiles"])
        reference = DriftReference(
            documents=int(entry["documents"]),
            predicted_labels=_shares(entry["predicted_labels"], labels, "predicted_labels"),
            confidence_mean=float(confidence["mean"]),
            confidence_quantiles=quantiles,
            training_labels=_shares(entry["training_labels"], labels, "training_labels"),
            training_labels_source=str(entry["training_labels_source"]),
            confidence_histogram=dict(confidence.get("histogram") or {}),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{MANIFEST_KEY} is missing {exc}") from None
    if len(quantiles) != QUANTILE_STEPS + 1 or any(b < a for a, b in zip(quantiles, quantiles[1:], strict=False)) \
            or not all(0.0 <= q <= 1.0 for q in quantiles):
        raise ValueError(f"{MANIFEST_KEY}: confidence quantiles must be {QUANTILE_STEPS + 1} non-decreasing scores "
                         "in [0, 1]")
    if reference.documents < 1 or not 0.0 <= reference.confidence_mean <= 1.0:
        raise ValueError(f"{MANIFEST_KEY}: documents must be positive and the mean confidence in [0, 1]")
    return reference
