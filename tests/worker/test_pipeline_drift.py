"""The drift gauges fed by the one pipeline, in both delivery modes: the window holds the last stored labels
(reviewed ones included, dead letters not), whichever guarantee stored them."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.worker.fakes import FakeEngine
from tests.worker.test_drift import direct_js, reference, series
from tests.worker.test_pipeline import MODES, TOPIC, doc, record, run_pipeline


@pytest.mark.parametrize("mode", MODES)
def test_the_drift_window_holds_the_last_labels_the_broker_stored(mode: str) -> None:
    ref = reference({"ham": 0.7, "spam": 0.3}, [0.5 + i / 200 for i in range(100)])
    records = [doc(0, o, "word " * (1 + o % 9)) for o in range(60)] + [record(0, 60, b"\xff not utf-8")]
    run = run_pipeline(mode, records, engine=FakeEngine(drift_reference=ref),
                       settings_options={"drift_window": 25, "min_confidence": 0.8,
                                         "review_topic": f"{TOPIC}.review"})
    assert run.code == 0
    stored = [json.loads(w.value) for topic in (f"{TOPIC}.labels", f"{TOPIC}.review")
              for w in run.broker.records(topic)]
    last = sorted(stored, key=lambda body: body["source"]["offset"])[-25:]  # the dead letter at 60 is not one
    mix = {label: n / 25 for label, n in Counter(body["label"] for body in last).items()}
    values = series(run.metrics)
    assert values[("lstm_worker_drift_window_records", "fake@1")] == 25
    assert values[("lstm_worker_drift_label_divergence", "fake@1")] == pytest.approx(
        direct_js(mix, ref.predicted_labels))
    assert values[("lstm_worker_drift_low_confidence_share", "fake@1")] == sum(
        body["score"] < 0.8 for body in last) / 25
    assert values[("lstm_worker_drift_confidence_shift", "fake@1")] == pytest.approx(
        sum(body["score"] for body in last) / 25 - ref.confidence_mean)
