"""The bar: a stream written and read back by a different Kafka client (librdkafka via confluent-kafka).

JSON inputs with ids, mixed with malformed payloads, go through `lstm-worker run`;
every input must come back exactly once as a label or a dead letter, labels
identical to the offline engine, with no torch in the worker process, /metrics
answering and a clean exit on SIGTERM; in both delivery modes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from core.bundle import load_bundle
from core.engine import InferenceEngine
from tests.support.kafka import create_stream, produce, read_until
from tests.support.workers import WorkerPool, mode_flags
from worker.devbroker import DevBroker

MALFORMED = [
    (b"\xc3\x28 broken utf-8", "invalid_utf8"),
    (b"", "empty_text"),
    (b" \r\n ", "empty_text"),
    (b'{"id": "no-text"}', "missing_text"),
    (b'{"id": "null-text", "text": null}', "missing_text"),
    (b"[1, 2, 3]", "not_json_object"),
    (b"null", "not_json_object"),
    (b'{"text": "   "}', "empty_text"),
]


def test_librdkafka_stream_is_fully_accounted_for_and_labelled_like_offline(
    broker: DevBroker, workers: WorkerPool, tiny_bundle_dir: Path, news_docs: list[str], unique_name: str, mode: str
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, output, dlq = create_stream(bootstrap, unique_name, partitions=3)

    texts = {f"doc-{i}": doc for i, doc in enumerate(news_docs[:200])}
    payloads = [(record_id, json.dumps({"id": record_id, "text": text}).encode()) for record_id, text in texts.items()]
    bad = {f"bad-{i}": (value, reason) for i, (value, reason) in enumerate(MALFORMED * 2)}
    payloads += [(key, value) for key, (value, _) in bad.items()]
    random.Random(0).shuffle(payloads)
    produce(bootstrap, topic, [(key, value, [("origin", b"librdkafka")]) for key, value in payloads])

    worker = workers.start(bootstrap, topic, unique_name, *mode_flags(mode))
    worker.wait_ready()
    messages = read_until(bootstrap, [output, dlq], expected=len(payloads))
    metrics_status, metrics_text = worker.get("/metrics")
    maps = worker.mapped_files()
    assert worker.terminate() == 0, worker.log()

    labels = {m.key.decode(): json.loads(m.value) for m in messages if m.topic == output}
    letters = {m.key.decode(): m for m in messages if m.topic == dlq}
    # Every input exactly once: a label for each good record, a dead letter for each bad one.
    assert len(messages) == len(payloads)
    assert set(labels) == set(texts)
    assert set(letters) == set(bad)

    offline = InferenceEngine(load_bundle(tiny_bundle_dir), provider="cpu", threads=1).predict_texts(
        list(texts.values()), top_k=3)
    for record_id, prediction in zip(texts, offline, strict=True):
        assert labels[record_id]["id"] == record_id
        assert labels[record_id]["label"] == prediction.label, record_id

    for key, letter in letters.items():
        value, reason = bad[key]
        assert letter.value in (value, None) and (letter.value or b"") == value
        assert letter.header("error.type") == reason.encode(), key
        assert letter.header("origin") == b"librdkafka"
        assert letter.header("source.topic") == topic.encode()

    assert metrics_status == 200 and "lstm_worker_records_in_total" in metrics_text
    assert "libtorch" not in maps and "/torch/" not in maps
