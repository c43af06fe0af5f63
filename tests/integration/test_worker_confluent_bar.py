"""The bar: a stream written and read back by a different Kafka client (librdkafka via confluent-kafka).

JSON inputs with ids, mixed with malformed payloads, go through `lstm-worker run`;
every input must come back exactly once as a label or a dead letter, labels
identical to the offline engine, with no torch in the worker process, /metrics
answering and a clean exit on SIGTERM.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from core.bundle import load_bundle
from tests.integration.conftest import WorkerLauncher
from worker import codec
from worker.devbroker import DevBroker
from worker.engine import InferenceEngine

MALFORMED = [
    (b"\xc3\x28 broken utf-8", codec.INVALID_UTF8),
    (b"", codec.EMPTY_TEXT),
    (b" \r\n ", codec.EMPTY_TEXT),
    (b'{"id": "no-text"}', codec.MISSING_TEXT),
    (b'{"id": "null-text", "text": null}', codec.MISSING_TEXT),
    (b"[1, 2, 3]", codec.NOT_JSON_OBJECT),
    (b"null", codec.NOT_JSON_OBJECT),
    (b'{"text": "   "}', codec.EMPTY_TEXT),
]


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # keep a reference until the futures resolve
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names])
    for future in futures.values():
        future.result(timeout=30)


def consume(bootstrap: str, topics: list[str], partitions: int, expected: int, timeout: float = 120) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bar-reader-{time.time_ns()}",
                         "enable.auto.commit": False})
    # Assigned, not subscribed: reading back needs no group join.
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)])
    messages: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.2):
                assert message.error() is None, message.error()
                messages.append(message)
    finally:
        consumer.close()
    return messages


def test_librdkafka_stream_is_fully_accounted_for_and_labelled_like_offline(
    broker: DevBroker, workers: WorkerLauncher, tiny_bundle_dir: Path, news_docs: list[str], unique_name: str
) -> None:
    bootstrap = broker.bootstrap_servers
    topic, output, dlq = unique_name, f"{unique_name}.labels", f"{unique_name}.dlq"
    create_topics(bootstrap, [topic, output, dlq], partitions=3)

    texts = {f"doc-{i}": doc for i, doc in enumerate(news_docs[:200])}
    payloads = [(record_id, json.dumps({"id": record_id, "text": text}).encode()) for record_id, text in texts.items()]
    bad = {f"bad-{i}": (value, reason) for i, (value, reason) in enumerate(MALFORMED * 2)}
    payloads += [(key, value) for key, (value, _) in bad.items()]
    random.Random(0).shuffle(payloads)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in payloads:
        producer.produce(topic, key=key.encode(), value=value, headers=[("origin", b"librdkafka")])
        producer.poll(0)
    assert producer.flush(30) == 0

    worker = workers.start(topic, unique_name)
    worker.wait_ready()
    messages = consume(bootstrap, [output, dlq], 3, expected=len(payloads))
    metrics_status, metrics_text = worker.get("/metrics")
    maps = worker.mapped_files()
    assert worker.terminate() == 0, worker.log()

    labels = {m.key().decode(): json.loads(m.value()) for m in messages if m.topic() == output}
    letters = {m.key().decode(): m for m in messages if m.topic() == dlq}
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
        headers = dict(letter.headers())
        assert letter.value() in (value, None) and (letter.value() or b"") == value
        assert headers["error.type"] == reason.encode(), key
        assert headers["origin"] == b"librdkafka"
        assert headers["source.topic"] == topic.encode()

    assert metrics_status == 200 and "lstm_worker_records_in_total" in metrics_text
    assert "libtorch" not in maps and "/torch/" not in maps
