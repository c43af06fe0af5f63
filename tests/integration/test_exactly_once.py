"""`lstm-worker run --exactly-once` against the real broker and ONNX Runtime: what Tansu does support.

Committed group offsets move only with committed transactions, a batch that cannot be committed is
aborted without moving them, and a second producer with the worker's transactional id fences it.
(Tansu returns aborted records to read_committed readers, so the end-to-end exactly-once check lives
in tests/faults/test_exactly_once_faults.py behind a probe.)
"""

from __future__ import annotations

import json
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.integration.conftest import create_topics
from tests.integration.streams import Message, produce


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets, read without joining it."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions)}
    finally:
        consumer.close()


def wait_committed(bootstrap: str, group: str, topic: str, partitions: int, total: int,
                   timeout: float = 60) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        offsets = committed_offsets(bootstrap, group, topic, partitions)
        if sum(offsets.values()) >= total or time.monotonic() > deadline:
            return offsets
        time.sleep(0.3)


def read_to_end(bootstrap: str, topics: list[str], isolation_level: str = "read_committed") -> list[Message]:
    """Every record of ``topics`` up to their end offsets now (transaction markers count in offsets, not here)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation_level)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        messages: list[Message] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                messages.extend(Message(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers or []))
                                for r in records)
        return messages
    finally:
        consumer.close()


def source_of(message: Message) -> tuple[int, int]:
    """(input partition, input offset) of a label or a dead letter."""
    if message.topic.endswith(".dlq"):
        return int(message.header("source.partition")), int(message.header("source.offset"))
    source = json.loads(message.value)["source"]
    return source["partition"], source["offset"]


def json_docs(docs: list[str], prefix: str) -> list[tuple[bytes, bytes, list]]:
    return [(f"{prefix}-{i}".encode(), json.dumps({"id": f"{prefix}-{i}", "text": d}).encode(), [])
            for i, d in enumerate(docs)]


def events(worker, name: str) -> list[dict]:
    return [e for e in worker.log_events() if e.get("event") == name]


def test_offsets_move_only_with_committed_transactions(broker, workers, news_docs, unique_name) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topics(broker.bootstrap_servers, [topic, f"{topic}.labels", f"{topic}.dlq"], partitions=3)
    records = json_docs(news_docs[:150], "doc") + [(b"bad-0", b"[1, 2]", []), (b"bad-1", None, [])]
    produce(broker.bootstrap_servers, topic, records)
    worker = workers.start(topic, group, "--exactly-once", "--transactional-id", f"{unique_name}-tx",
                           "--batch-size", "32")
    committed = wait_committed(broker.bootstrap_servers, group, topic, 3, len(records))
    assert worker.terminate() == 0, worker.log()

    inputs = read_to_end(broker.bootstrap_servers, [topic])
    ends = {p: 1 + max(m.offset for m in inputs if m.partition == p) for p in range(3)}
    assert committed == ends, worker.log()
    outputs = read_to_end(broker.bootstrap_servers, [f"{topic}.labels", f"{topic}.dlq"])
    # No transaction aborted in this run, so even on Tansu each input has exactly one result.
    assert sorted(source_of(m) for m in outputs) == sorted((m.partition, m.offset) for m in inputs)
    assert sorted(m.key for m in outputs if m.topic.endswith(".dlq")) == [b"bad-0", b"bad-1"]
    started = events(worker, "worker_started")[0]
    assert started["delivery"] == "exactly-once" and started["transactional_id"] == f"{unique_name}-tx"
    assert events(worker, "transaction_aborted") == []


def test_a_batch_that_cannot_commit_is_aborted_and_offsets_stay(broker, workers, news_docs, unique_name) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topics(broker.bootstrap_servers, [topic, f"{topic}.labels", f"{topic}.dlq"], partitions=1)
    first = json_docs(news_docs[:30], "a")
    produce(broker.bootstrap_servers, topic, first)
    # --max-message-bytes 100000 gives the producer a ~1.1 MB request limit: a label keyed with a 1.2 MB
    # key is refused by kafka-python itself (MessageSizeTooLargeError), on every attempt.
    worker = workers.start(topic, group, "--exactly-once", "--transactional-id", f"{unique_name}-tx",
                           "--max-message-bytes", "100000")
    assert wait_committed(broker.bootstrap_servers, group, topic, 1, len(first)) == {0: len(first)}, worker.log()

    poison = (b"k" * 1_200_000, json.dumps({"id": "poison", "text": news_docs[30]}).encode(), [])
    produce(broker.bootstrap_servers, topic, [poison, *json_docs(news_docs[31:36], "b")])
    assert worker.process.wait(timeout=90) == 1, worker.log()

    assert committed_offsets(broker.bootstrap_servers, group, topic, 1) == {0: len(first)}
    aborted = events(worker, "transaction_aborted")
    assert len(aborted) == 5, worker.log()
    assert all("MessageSizeTooLarge" in e["error"] and e["rewound_to"] == {f"{topic}[0]": len(first)}
               for e in aborted)
    assert "5 transactions in a row aborted" in events(worker, "worker_failed")[0]["error"]


def test_a_second_producer_with_the_same_transactional_id_fences_the_worker(broker, workers, news_docs,
                                                                               unique_name) -> None:
    topic, group, transactional_id = unique_name, f"{unique_name}-g", f"{unique_name}-tx"
    create_topics(broker.bootstrap_servers, [topic, f"{topic}.labels", f"{topic}.dlq"], partitions=2)
    first = json_docs(news_docs[:20], "a")
    produce(broker.bootstrap_servers, topic, first)
    worker = workers.start(topic, group, "--exactly-once", "--transactional-id", transactional_id)
    committed = wait_committed(broker.bootstrap_servers, group, topic, 2, len(first))
    assert sum(committed.values()) == len(first), worker.log()

    successor = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, transactional_id=transactional_id)
    try:
        successor.init_transactions()  # what a restarted replica does first
        produce(broker.bootstrap_servers, topic, json_docs(news_docs[20:40], "b"))
        assert worker.process.wait(timeout=90) == 1, worker.log()
    finally:
        successor.close(5)

    fenced = events(worker, "producer_fenced")
    assert fenced and fenced[0]["transactional_id"] == transactional_id, worker.log()
    assert "ProducerFenced" in fenced[0]["error"]
    assert committed_offsets(broker.bootstrap_servers, group, topic, 2) == committed
