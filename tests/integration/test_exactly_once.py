"""`lstm-worker run --exactly-once` against the real broker and ONNX Runtime: what Tansu does support.

Committed group offsets move only with committed transactions, a batch the broker refuses is aborted
without moving them, and a second producer with the worker's transactional id fences the worker.
(Tansu returns aborted records to read_committed readers, so the end-to-end exactly-once check lives
in tests/faults/test_exactly_once_faults.py behind a probe.)
"""

from __future__ import annotations

import json
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.integration.conftest import WorkerLauncher, create_topics
from tests.integration.streams import Message, produce, read_all
from tests.schema_broker import SchemaBroker


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
    # A 1.2 MB key is more than the producer takes with --max-message-bytes 100000 (a ~1.1 MB request
    # limit), in a label or in a dead letter: it is dead-lettered without key, in the same transaction.
    too_large = (b"k" * 1_200_000, json.dumps({"id": "huge-key", "text": news_docs[150]}).encode(), [])
    records = json_docs(news_docs[:150], "doc") + [(b"bad-0", b"[1, 2]", []), (b"bad-1", None, []), too_large]
    produce(broker.bootstrap_servers, topic, records)
    worker = workers.start(topic, group, "--exactly-once", "--transactional-id", f"{unique_name}-tx",
                           "--batch-size", "32", "--max-message-bytes", "100000")
    committed = wait_committed(broker.bootstrap_servers, group, topic, 3, len(records))
    assert worker.terminate() == 0, worker.log()

    inputs = read_all(broker.bootstrap_servers, [topic], "read_committed")
    ends = {p: 1 + max(m.offset for m in inputs if m.partition == p) for p in range(3)}
    assert committed == ends, worker.log()
    outputs = read_all(broker.bootstrap_servers, [f"{topic}.labels", f"{topic}.dlq"], "read_committed")
    # No transaction aborted in this run, so even on Tansu each input has exactly one result.
    assert sorted(source_of(m) for m in outputs) == sorted((m.partition, m.offset) for m in inputs)
    dead = {m.key: m.header("error.type") for m in outputs if m.topic.endswith(".dlq")}
    assert dead == {b"bad-0": b"not_json_object", b"bad-1": b"null_value", None: b"output_too_large"}
    assert [m.header("error.key_dropped") for m in outputs if m.key is None] == [b"1200000"]
    started = events(worker, "worker_started")[0]
    assert started["delivery"] == "exactly-once" and started["transactional_id"] == f"{unique_name}-tx"
    assert events(worker, "transaction_aborted") == []
    assert events(worker, "worker_exit")[0]["torch_imported"] is False


def test_a_batch_the_broker_refuses_is_aborted_and_offsets_stay(tiny_bundle_dir, news_docs, unique_name,
                                                                tmp_path) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    with SchemaBroker(tmp_path / "broker") as broker:
        launcher = WorkerLauncher(broker.bootstrap_servers, tmp_path, tiny_bundle_dir)
        try:
            create_topics(broker.bootstrap_servers, [topic, f"{topic}.labels", f"{topic}.dlq"], partitions=1)
            first = json_docs(news_docs[:30], "a")
            produce(broker.bootstrap_servers, topic, first)
            worker = launcher.start(topic, group, "--exactly-once", "--transactional-id", f"{unique_name}-tx")
            assert wait_committed(broker.bootstrap_servers, group, topic, 1, len(first)) == {0: len(first)}, \
                worker.log()
            broker.reject_records(f"{topic}.labels")  # from now on the broker refuses every label
            produce(broker.bootstrap_servers, topic, json_docs(news_docs[30:40], "b"))
            assert worker.process.wait(timeout=90) == 1, worker.log()
            assert committed_offsets(broker.bootstrap_servers, group, topic, 1) == {0: len(first)}
        finally:
            for started in launcher.started:
                if started.process.poll() is None:
                    started.process.kill()
                    started.process.wait()
    aborted = events(worker, "transaction_aborted")
    assert len(aborted) == 5, worker.log()
    assert all(e["rewound_to"] == {f"{topic}[0]": len(first)} and "InvalidRecord" in e["error"] for e in aborted)
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
