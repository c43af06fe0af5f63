"""The drift arithmetic (Jensen-Shannon divergence, the sliding window) and the gauges it feeds, without I/O.

The values are checked against a direct computation over the same labels, not against numbers written here.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from prometheus_client import generate_latest

from core.drift_reference import QUANTILE_STEPS, DriftReference
from tests.worker.fakes import RecordingLog
from worker.drift import DEFAULT_LOW_CONFIDENCE_QUANTILE, DriftMonitor, DriftWindow, js_divergence
from worker.metrics import WorkerMetrics

LABELS = ("a", "b", "c")


def reference(predicted: dict[str, float], scores: list[float]) -> DriftReference:
    ordered = sorted(scores)
    quantiles = tuple(ordered[round(i / QUANTILE_STEPS * (len(ordered) - 1))] for i in range(QUANTILE_STEPS + 1))
    return DriftReference(documents=len(scores), predicted_labels=predicted,
                          confidence_mean=sum(scores) / len(scores), confidence_quantiles=quantiles,
                          training_labels=predicted, training_labels_source="test", confidence_histogram={})


def direct_js(p: dict[str, float], q: dict[str, float]) -> float:
    """The definition, with natural logs converted to bits at the end."""
    keys = set(p) | set(q)
    m = {k: (p.get(k, 0) + q.get(k, 0)) / 2 for k in keys}

    def kl(x: dict[str, float]) -> float:
        return sum(x[k] * math.log(x[k] / m[k]) for k in keys if x.get(k, 0) > 0)

    return (kl(p) + kl(q)) / 2 / math.log(2)


def test_js_divergence_is_0_for_equal_mixes_1_for_disjoint_ones_and_symmetric() -> None:
    assert js_divergence({"a": 0.5, "b": 0.5}, {"b": 0.5, "a": 0.5}) == 0
    assert js_divergence({"a": 1.0}, {"b": 0.6, "c": 0.4}) == pytest.approx(1.0)
    rng = random.Random(7)
    for _ in range(50):
        p = {k: rng.random() for k in LABELS}
        q = {k: rng.random() for k in LABELS[:2]}
        p = {k: v / sum(p.values()) for k, v in p.items()}
        q = {k: v / sum(q.values()) for k, v in q.items()}
        assert js_divergence(p, q) == pytest.approx(direct_js(p, q)) == pytest.approx(js_divergence(q, p))
        assert 0 <= js_divergence(p, q) <= 1


def test_the_window_keeps_exactly_the_last_records() -> None:
    rng = random.Random(3)
    window = DriftWindow(size=50, threshold=0.6)
    seen: list[tuple[str, float]] = []
    for _ in range(500):
        label, score = rng.choice(LABELS), round(rng.random(), 6)
        window.add(label, score)
        seen.append((label, score))
        last = seen[-50:]
        assert len(window) == len(last) and window.full == (len(seen) >= 50)
        counts = Counter(label for label, _ in last)
        assert window.label_shares() == pytest.approx({k: n / len(last) for k, n in counts.items()})
        assert window.mean_score() == pytest.approx(sum(s for _, s in last) / len(last))
        assert window.share_below() == sum(s < 0.6 for _, s in last) / len(last)


def test_reference_quantiles_and_shares_below_interpolate_the_held_out_scores() -> None:
    scores = [i / 1000 for i in range(1001)]  # uniform on [0, 1]
    ref = reference({"a": 1.0}, scores)
    assert ref.quantile(0.10) == pytest.approx(0.10, abs=1e-3)
    assert ref.share_below(0.25) == pytest.approx(0.25, abs=1e-3)
    assert ref.share_below(ref.quantile(0.37)) == pytest.approx(0.37, abs=1e-3)
    assert ref.share_below(-1) == 0 and ref.share_below(2) == 1


def series(metrics: WorkerMetrics) -> dict[tuple[str, str], float]:
    """{(metric, model): value} of every drift gauge, read as Prometheus would."""
    return {(s.name, s.labels["model"]): s.value for family in metrics.registry.collect()
            if family.name.startswith("lstm_worker_drift_") for s in family.samples}


def test_the_gauges_are_nan_until_the_window_is_full_then_match_the_window() -> None:
    metrics, log = WorkerMetrics(), RecordingLog()
    scores = [0.3 + 0.7 * i / 999 for i in range(1000)]
    ref = reference({"a": 0.5, "b": 0.3, "c": 0.2}, scores)
    monitor = DriftMonitor(metrics, window_size=100, min_confidence=0.0, log=log)
    monitor.serve("m@1", ref)
    rng = random.Random(11)
    stream = [(rng.choice("aab"), round(rng.uniform(0.2, 1.0), 6)) for _ in range(250)]
    for label, score in stream[:99]:
        monitor.observe("m@1", label, score)
    values = series(metrics)
    assert math.isnan(values[("lstm_worker_drift_label_divergence", "m@1")])
    assert values[("lstm_worker_drift_window_records", "m@1")] == 99
    for label, score in stream[99:]:
        monitor.observe("m@1", label, score)
    values = series(metrics)
    last = stream[-100:]
    threshold = ref.quantile(DEFAULT_LOW_CONFIDENCE_QUANTILE)
    mix = {k: n / 100 for k, n in Counter(label for label, _ in last).items()}
    assert values[("lstm_worker_drift_label_divergence", "m@1")] == pytest.approx(direct_js(mix, ref.predicted_labels))
    assert values[("lstm_worker_drift_low_confidence_threshold", "m@1")] == pytest.approx(threshold)
    assert values[("lstm_worker_drift_low_confidence_share", "m@1")] == sum(s < threshold for _, s in last) / 100
    assert values[("lstm_worker_drift_low_confidence_reference", "m@1")] == pytest.approx(0.10, abs=0.01)
    assert values[("lstm_worker_drift_confidence_shift", "m@1")] == pytest.approx(
        sum(s for _, s in last) / 100 - ref.confidence_mean)
    assert values[("lstm_worker_drift_window_records", "m@1")] == 100


def test_min_confidence_is_the_threshold_and_a_swap_starts_a_fresh_window_for_the_new_model() -> None:
    metrics = WorkerMetrics()
    monitor = DriftMonitor(metrics, window_size=10, min_confidence=0.8, log=RecordingLog())
    ref = reference({"a": 1.0}, [0.5, 0.9, 0.95])
    monitor.serve("m@1", ref)
    for i in range(10):
        monitor.observe("m@1", "a", 0.7 if i < 4 else 0.9)
    assert series(metrics)[("lstm_worker_drift_low_confidence_share", "m@1")] == 0.4
    assert series(metrics)[("lstm_worker_drift_low_confidence_threshold", "m@1")] == 0.8
    monitor.serve("m@2", ref)
    monitor.observe("m@1", "a", 0.1)  # scored by the old model before the swap, stored after it: not counted
    values = series(metrics)
    assert {model for _, model in values} == {"m@2"}  # the old model's series are gone
    assert values[("lstm_worker_drift_window_records", "m@2")] == 0
    assert math.isnan(values[("lstm_worker_drift_low_confidence_share", "m@2")])


def test_a_bundle_without_a_reference_exports_no_drift_series_and_says_so() -> None:
    metrics, log = WorkerMetrics(), RecordingLog()
    monitor = DriftMonitor(metrics, window_size=10, min_confidence=0.0, log=log)
    monitor.serve("old@1", None)
    for _ in range(20):
        monitor.observe("old@1", "a", 0.9)
    assert series(metrics) == {}
    assert log.named("drift_reference_missing")[0]["model"] == "old@1"
    exposition = generate_latest(metrics.registry).decode()
    assert "# TYPE lstm_worker_drift_label_divergence gauge" in exposition  # declared, with no series
    assert "lstm_worker_drift_label_divergence{" not in exposition
