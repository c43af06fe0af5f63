"""`--exactly-once` under SIGKILLs, every input accounted for by an independent librdkafka reader.

What every broker must give: the group's committed offsets never run ahead of the results written for them,
and nothing is lost. The end-to-end promise, a read_committed reader sees each input's result exactly once
and no result of an aborted transaction, also needs the broker to hide aborted records from read_committed
readers: Apache Kafka does (the probe test), Tansu 0.6 does not, so those tests are ``kafka_only``.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from tests.support.data import json_records, malformed_payloads
from tests.support.kafka import (
    committed_offsets,
    create_stream,
    create_topics,
    high_watermarks,
    produce,
    read_all,
    reconcile,
)
from tests.support.report import record_report
from tests.support.workers import EXACTLY_ONCE, in_background, kill_in_turn

PARTITIONS = 3
HIDES_ABORTED = "Tansu returns records of aborted transactions to read_committed readers"


def aborted_records_visible(bootstrap: str) -> list[bytes]:
    """Records of an aborted transaction that a read_committed reader still returns (none on a real Kafka)."""
    topic = f"eos-probe-{time.time_ns()}"
    create_topics(bootstrap, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-tx"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed")
    producer.commit_transaction(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while b"committed" not in seen and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                seen.append(message.value())
    finally:
        consumer.close()
    assert b"committed" in seen, "the probe's committed record never arrived"
    return [v for v in seen if v != b"committed"]


def read_every_record(bootstrap: str, topic: str) -> list[tuple[str, int, int]]:
    """(key, input partition, input offset) of every label and dead letter, aborted ones included."""
    return [((m.key or b"").decode(), *m.source()) for m in read_all(bootstrap, [f"{topic}.labels", f"{topic}.dlq"])]


def input_end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    return {p: end for (_, p), end in high_watermarks(bootstrap, [(topic, p) for p in range(PARTITIONS)]).items()}


def stream_with_two_sigkills(broker, texts: list[str], workers, topic: str):
    """One exactly-once worker, SIGKILLed twice while 1,260 records stream in, restarted each time."""
    group = f"g-{topic}"
    create_stream(broker.bootstrap_servers, topic, partitions=PARTITIONS)
    (worker,) = workers.start_group(broker.bootstrap_servers, topic, group, 1, mode=EXACTLY_ONCE)
    records = json_records(texts[:1200]) + malformed_payloads(60)
    random.Random(3).shuffle(records)
    producer = in_background(produce, broker.bootstrap_servers, topic, records, 0.008)
    for _ in range(2):
        time.sleep(3)
        worker.kill()  # mid-transaction or between two: the restart below fences and aborts what was open
        worker.start()
        worker.wait_healthy()
    producer.join()
    ends = input_end_offsets(broker.bootstrap_servers, topic)
    deadline = time.monotonic() + 240
    while committed_offsets(broker.bootstrap_servers, group, topic, PARTITIONS) != ends \
            and time.monotonic() < deadline:
        time.sleep(1)
    return topic, group, [k for k, _ in records], ends, worker


def test_sigkills_keep_committed_offsets_behind_results_and_lose_nothing(broker, real_texts, workers,
                                                                         unique_name) -> None:
    topic, group, keys, ends, worker = stream_with_two_sigkills(broker, real_texts, workers, unique_name)
    committed = committed_offsets(broker.bootstrap_servers, group, topic, PARTITIONS)
    assert committed == ends, "the restarted worker did not consume the whole stream"
    results = read_every_record(broker.bootstrap_servers, topic)
    answered = {(p, o) for _, p, o in results}
    # Offsets move only inside a transaction that also wrote the results: none runs ahead of its results.
    behind = [(p, o) for p, end in committed.items() for o in range(end) if (p, o) not in answered]
    assert behind == []
    counts = Counter(k for k, _, _ in results)
    assert [k for k in keys if counts[k] == 0] == []
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    record_report("exactly_once_two_sigkills", {"inputs": len(keys), "records_including_aborted": len(results),
                                                "duplicates_including_aborted": duplicates})
    assert worker.terminate() == 0


@pytest.mark.kafka_only(HIDES_ABORTED)
def test_read_committed_readers_never_see_an_aborted_record(broker) -> None:
    assert aborted_records_visible(broker.bootstrap_servers) == []


@pytest.mark.kafka_only(HIDES_ABORTED)
def test_sigkills_read_committed_sees_each_input_exactly_once(broker, real_texts, workers, unique_name) -> None:
    topic, _, keys, _, worker = stream_with_two_sigkills(broker, real_texts, workers, unique_name)
    result = reconcile(broker.bootstrap_servers, topic, keys, timeout=120, isolation_level="read_committed")
    assert {k: result.outputs[k] + result.dead[k] for k in keys} == {k: 1 for k in keys}
    assert worker.terminate() == 0


@pytest.mark.kafka_only(HIDES_ABORTED)
def test_three_workers_sigkilled_three_times_give_every_result_exactly_once(broker, real_texts, workers,
                                                                             unique_name) -> None:
    """Three exactly-once replicas of one group, SIGKILLed in turn three times mid-stream (each restarted with
    its transactional id, fencing its predecessor), malformed input mixed in."""
    topic, bootstrap = unique_name, broker.bootstrap_servers
    create_stream(bootstrap, topic, partitions=6)
    group = workers.start_group(bootstrap, topic, f"g-{topic}", 3, mode=EXACTLY_ONCE)
    good, bad = json_records(real_texts[:1500]), malformed_payloads(60)
    records = good + bad
    random.Random(4).shuffle(records)
    producer = in_background(produce, bootstrap, topic, records, 0.008)
    kill_in_turn(group, kills=3, every_s=3)
    producer.join()
    keys = [k for k, _ in records]
    committed = reconcile(bootstrap, topic, keys, timeout=240, isolation_level="read_committed")
    assert {k: committed.outputs[k] for k, _ in good} == {k: 1 for k, _ in good}
    assert {k: committed.dead[k] for k, _ in bad} == {k: 1 for k, _ in bad}
    everything = read_every_record(bootstrap, topic)
    record_report("exactly_once_three_workers_three_sigkills", {
        "inputs": len(keys), "read_committed_results": sum(committed.outputs.values()) + sum(committed.dead.values()),
        "aborted_results_hidden": len(everything) - len(keys)})
    assert all(w.alive() for w in group), "a worker exited that was not killed"
    assert [w.terminate() for w in group] == [0, 0, 0]
