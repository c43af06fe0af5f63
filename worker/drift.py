"""Drift gauges: a sliding window of the worker's recent labels against the bundle's reference.

The reference (core/drift_reference.py) is what the served model answered on held-out documents at export.
The window holds the last ``--drift-window`` labels (dead letters and shadow labels are not outputs of the
model being watched) and feeds three gauges, per model id:

- ``lstm_worker_drift_label_divergence``: the Jensen-Shannon divergence, base 2 (0 = the same label mix,
  1 = no label in common), of the window's label mix from the reference's *predicted* label mix (a model
  does not spread its predictions like the truth, so the truth would read as drift);
- ``lstm_worker_drift_low_confidence_share``: the share of the window whose top-1 score is below the
  threshold: ``--min-confidence`` when set, else the score below which 10 % of the reference fell; beside it
  ``lstm_worker_drift_low_confidence_reference``, the reference's share below the same threshold;
- ``lstm_worker_drift_confidence_shift``: the window's mean top-1 score minus the reference's.

Each is NaN until the window is full (a half-full window's divergence is mostly sampling noise), and the
window starts afresh when a new model is served (a hot swap). A bundle without a reference gets no drift
series at all. Adding a label is O(1) on the loop thread; the gauges are computed when /metrics is read.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from core.drift_reference import DriftReference
from worker.metrics import WorkerMetrics

# Without --min-confidence, "low confidence" is a score the reference's least confident 10 % had.
DEFAULT_LOW_CONFIDENCE_QUANTILE = 0.10
_SCORE_UNITS = 1_000_000  # scores are summed as integers: a window that runs for months accumulates no error


def js_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence of two distributions over labels, base 2: in [0, 1]."""
    total = 0.0
    for key in p.keys() | q.keys():
        a, b = p.get(key, 0.0), q.get(key, 0.0)
        middle = (a + b) / 2
        if a > 0:
            total += a * math.log2(a / middle)
        if b > 0:
            total += b * math.log2(b / middle)
    return min(1.0, max(0.0, total / 2))


class DriftWindow:
    """The last ``size`` labels with running counts: the label mix, the mean score, the share below a threshold."""

    def __init__(self, size: int, threshold: float):
        self.size, self.threshold = size, threshold
        self._entries: deque[tuple[str, int]] = deque()
        self._labels: Counter[str] = Counter()
        self._score_units = 0
        self._below = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def full(self) -> bool:
        return len(self._entries) >= self.size

    def add(self, label: str, score: float) -> None:
        if len(self._entries) >= self.size:
            old_label, old_units = self._entries.popleft()
            self._labels[old_label] -= 1
            self._score_units -= old_units
            self._below -= old_units < self._threshold_units
        units = round(score * _SCORE_UNITS)
        self._entries.append((label, units))
        self._labels[label] += 1
        self._score_units += units
        self._below += units < self._threshold_units

    @property
    def _threshold_units(self) -> int:
        return round(self.threshold * _SCORE_UNITS)

    def label_shares(self) -> dict[str, float]:
        n = len(self._entries)
        return {label: count / n for label, count in self._labels.items() if count} if n else {}

    def mean_score(self) -> float:
        return self._score_units / _SCORE_UNITS / len(self._entries) if self._entries else math.nan

    def share_below(self) -> float:
        return self._below / len(self._entries) if self._entries else math.nan


class DriftMonitor:
    """The window of the model being served and its gauges; :meth:`serve` at start-up and after each swap."""

    def __init__(self, metrics: WorkerMetrics, window_size: int, min_confidence: float, log: Any):
        self.metrics, self.window_size, self.min_confidence, self.log = metrics, window_size, min_confidence, log
        self._lock = threading.Lock()  # the loop adds, the metrics server's thread reads
        self._model: str | None = None
        self._window: DriftWindow | None = None
        self._reference: DriftReference | None = None

    def _gauges(self) -> list:
        m = self.metrics
        return [m.drift_label_divergence, m.drift_low_confidence_share, m.drift_low_confidence_reference,
                m.drift_low_confidence_threshold, m.drift_confidence_shift, m.drift_window_records]

    def serve(self, model_id: str, reference: DriftReference | None) -> None:
        """From now on the window holds ``model_id``'s labels only, compared with its ``reference``."""
        with self._lock:
            if self._model is not None and self._window is not None:
                for gauge in self._gauges():
                    gauge.remove(self._model)
            self._model, self._reference = model_id, reference
            if reference is None:
                self._window = None
                self.log.warning("drift_reference_missing", model=model_id,
                                 hint="the bundle predates drift references: re-export it to get drift gauges")
                return
            threshold = self.min_confidence or reference.quantile(DEFAULT_LOW_CONFIDENCE_QUANTILE)
            self._window = window = DriftWindow(self.window_size, threshold)
        m = self.metrics
        m.drift_label_divergence.labels(model_id).set_function(
            self._when_full(lambda: js_divergence(window.label_shares(), reference.predicted_labels)))
        m.drift_low_confidence_share.labels(model_id).set_function(self._when_full(window.share_below))
        m.drift_confidence_shift.labels(model_id).set_function(
            self._when_full(lambda: window.mean_score() - reference.confidence_mean))
        m.drift_window_records.labels(model_id).set_function(lambda: self._read(len, window))
        m.drift_low_confidence_reference.labels(model_id).set(reference.share_below(threshold))
        m.drift_low_confidence_threshold.labels(model_id).set(threshold)

    def observe(self, model_id: str, label: str, score: float) -> None:
        """A label the broker stored; ignored unless the model being watched scored it."""
        window = self._window
        if window is None or model_id != self._model:
            return  # scored before a swap, and stored after it: not the new model's output
        with self._lock:
            window.add(label, score)

    def _read(self, compute: Any, *args: Any) -> float:
        with self._lock:
            return float(compute(*args))

    def _when_full(self, compute: Any) -> Any:
        window = self._window
        return lambda: self._read(compute) if window is not None and window.full else math.nan
