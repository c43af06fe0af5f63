"""Confidence routing on the real broker, in both modes: every input lands in exactly one of the output,
review or dead-letter topic; review labels score below --min-confidence and outputs at or above it (issue 17)."""

from __future__ import annotations

import json
import statistics

from core.bundle import load_bundle
from core.engine import InferenceEngine
from tests.support.data import json_records
from tests.support.kafka import create_stream, create_topics, produce, read_until
from tests.support.workers import mode_flags, wait_until


def test_low_confidence_labels_go_to_the_review_topic(broker, workers, news_docs, unique_name, mode,
                                                      tiny_bundle_dir) -> None:
    docs = news_docs[:150]
    # The median top score of these very documents: both topics get about half.
    engine = InferenceEngine(load_bundle(tiny_bundle_dir), provider="cpu", threads=1)
    threshold = round(statistics.median(p.score for p in engine.predict_texts(docs)), 3)
    engine.close()
    bootstrap = broker.bootstrap_servers
    topic, labels, dlq = create_stream(bootstrap, unique_name, partitions=2)
    review = f"{topic}.review"
    create_topics(bootstrap, [review], partitions=2)
    worker = workers.start(bootstrap, topic, f"{unique_name}-g", *mode_flags(mode),
                           "--min-confidence", str(threshold), "--review-topic", review)
    worker.wait_ready()
    records = json_records(docs) + [("bad", b"\xff not utf-8")]
    produce(bootstrap, topic, records)
    answered = read_until(bootstrap, [labels, review, dlq], len(records), timeout=180)
    assert len(answered) == len(records) and len({m.source() for m in answered}) == len(records)
    outputs = [json.loads(m.value) for m in answered if m.topic == labels]
    routed = [json.loads(m.value) for m in answered if m.topic == review]
    assert outputs and routed
    assert all(b["score"] >= threshold and "low_confidence" not in b for b in outputs)
    assert all(b["score"] < threshold and b["low_confidence"] and b["review_reason"] for b in routed)
    assert [m.header("error.type") for m in answered if m.topic == dlq] == [b"invalid_utf8"]
    keys = {m.key for m in answered if m.topic == review}
    assert all(k.startswith(b"doc-") for k in keys)  # the input's key, as for any label
    counted = f"lstm_worker_review_total {float(len(routed))}"
    wait_until(lambda: counted in worker.get("/metrics")[1], 30, counted)  # acks reach the worker's loop too
    assert worker.terminate() == 0
