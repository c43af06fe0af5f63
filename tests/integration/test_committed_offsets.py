"""Committed group offsets against the real broker and ONNX Runtime, in both delivery modes.

Offsets end exactly at the end of the input once every input has its one result; a batch the broker
refuses never moves them; with --exactly-once, a second producer with the worker's transactional id
fences the worker. (The end-to-end exactly-once checks, with SIGKILLs, are in tests/faults.)
"""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer

from tests.support.kafka import committed_offsets, create_stream, produce, read_all, wait_committed
from tests.support.topic_refusal import WRITES_REFUSED, refuse_writes
from tests.support.workers import EXACTLY_ONCE, mode_flags


def json_docs(docs: list[str], prefix: str) -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}-{i}".encode(), json.dumps({"id": f"{prefix}-{i}", "text": d}).encode())
            for i, d in enumerate(docs)]


def test_offsets_end_at_the_input_end_with_one_result_per_input(broker, workers, news_docs, unique_name,
                                                                 mode) -> None:
    bootstrap = broker.bootstrap_servers
    topic, group = unique_name, f"{unique_name}-g"
    create_stream(bootstrap, topic, partitions=3)
    # A 1.2 MB key is more than the producer takes with --max-message-bytes 100000 (a ~1.1 MB request
    # limit), in a label or in a dead letter: it is dead-lettered without key (in the same transaction).
    too_large = (b"k" * 1_200_000, json.dumps({"id": "huge-key", "text": news_docs[150]}).encode())
    records = json_docs(news_docs[:150], "doc") + [(b"bad-0", b"[1, 2]"), (b"bad-1", None), too_large]
    produce(bootstrap, topic, records)
    worker = workers.start(bootstrap, topic, group, *mode_flags(mode), "--batch-size", "32",
                           "--max-message-bytes", "100000")
    committed = wait_committed(bootstrap, group, topic, 3, len(records))
    assert worker.terminate() == 0, worker.log()

    inputs = read_all(bootstrap, [topic], "read_committed")
    ends = {p: 1 + max(m.offset for m in inputs if m.partition == p) for p in range(3)}
    assert committed == ends, worker.log()
    outputs = read_all(bootstrap, [f"{topic}.labels", f"{topic}.dlq"], "read_committed")
    # Nothing failed in this run, so even on Tansu (which shows aborted records to read_committed readers) each
    # input has exactly one result.
    assert sorted(m.source() for m in outputs) == sorted((m.partition, m.offset) for m in inputs)
    dead = {m.key: m.header("error.type") for m in outputs if m.is_dead_letter}
    assert dead == {b"bad-0": b"not_json_object", b"bad-1": b"null_value", None: b"output_too_large"}
    assert [m.header("error.key_dropped") for m in outputs if m.key is None] == [b"1200000"]
    assert worker.events("worker_exit")[0]["torch_imported"] is False


@pytest.mark.kafka_only(WRITES_REFUSED)
def test_a_batch_the_broker_refuses_never_moves_offsets(own_broker, workers, news_docs, unique_name, mode) -> None:
    """Whatever the worker does while every label is refused (retry, abort), no offset passes what is answered."""
    bootstrap = own_broker.bootstrap_servers
    topic, group = unique_name, f"{unique_name}-g"
    create_stream(bootstrap, topic, partitions=1)
    first = json_docs(news_docs[:30], "a")
    produce(bootstrap, topic, first)
    worker = workers.start(bootstrap, topic, group, *mode_flags(mode), "--send-retry-backoff-max-s", "1")
    assert wait_committed(bootstrap, group, topic, 1, len(first)) == {0: len(first)}, worker.log()
    refuse_writes(bootstrap, f"{topic}.labels")  # from now on the broker refuses every label
    produce(bootstrap, topic, json_docs(news_docs[30:40], "b"))
    seen = []
    deadline = time.monotonic() + 10  # several retries or aborted transactions
    while time.monotonic() < deadline:
        seen.append(committed_offsets(bootstrap, group, topic, 1))
        time.sleep(0.5)
    assert all(offsets == {0: len(first)} for offsets in seen), (seen, worker.log())
    if worker.alive():
        worker.terminate()
    assert committed_offsets(bootstrap, group, topic, 1) == {0: len(first)}, worker.log()


def test_a_second_producer_with_the_same_transactional_id_fences_the_worker(broker, workers, news_docs,
                                                                               unique_name) -> None:
    bootstrap = broker.bootstrap_servers
    topic, group, transactional_id = unique_name, f"{unique_name}-g", f"{unique_name}-tx"
    create_stream(bootstrap, topic, partitions=2)
    first = json_docs(news_docs[:20], "a")
    produce(bootstrap, topic, first)
    worker = workers.start(bootstrap, topic, group, *mode_flags(EXACTLY_ONCE), "--transactional-id",
                           transactional_id)
    committed = wait_committed(bootstrap, group, topic, 2, len(first))
    assert sum(committed.values()) == len(first), worker.log()

    successor = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id})
    successor.init_transactions(30)  # what a restarted replica does first
    produce(bootstrap, topic, json_docs(news_docs[20:40], "b"))
    assert worker.wait(timeout=90) == 1, worker.log()

    fenced = worker.events("producer_fenced")
    assert fenced and fenced[0]["transactional_id"] == transactional_id, worker.log()
    assert committed_offsets(bootstrap, group, topic, 2) == committed
