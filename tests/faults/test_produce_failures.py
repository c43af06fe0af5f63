"""Produce failures with a real broker and real worker processes: nothing lost, no commit past, no crash loop.

On Apache Kafka (tests/support/topic_refusal.py) an output topic refuses writes for real and accepts them again
while the worker runs (a topic timestamp limit: INVALID_TIMESTAMP); Tansu ignores it, so that test is
``kafka_only``. "Too large" for the worker's own producer (``max_request_size``) runs on both. (A topic's
``max.message.bytes`` below a label: tests/faults/test_topic_size_limit.py.)

Both delivery modes must behave alike: a refused send (or a transaction that keeps failing) is retried with
back-off, the worker stays up and reports not ready, and only a real fence would make it exit. (The refusal
clears here at least once only: the timestamp limit also refuses the transaction coordinator's abort markers,
which leaves Kafka's transaction for that id pending for good.)
"""

from __future__ import annotations

import json
import re
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.support.data import json_records
from tests.support.kafka import committed_offsets, create_stream, high_watermarks, produce, reconcile
from tests.support.topic_refusal import WRITES_REFUSED, accept_writes, refuse_writes
from tests.support.workers import WorkerProcess, mode_flags, wait_until


def metric(worker: WorkerProcess, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, worker.get("/metrics")[1], re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def input_positions(bootstrap: str, topic: str, partitions: int, count: int) -> dict[str, tuple[int, int]]:
    """key -> (partition, offset) of every input record."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"positions-{time.time_ns()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    positions: dict[str, tuple[int, int]] = {}
    deadline = time.monotonic() + 60
    try:
        while len(positions) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is None:
                    positions[message.key().decode()] = (message.partition(), message.offset())
    finally:
        consumer.close()
    assert len(positions) == count
    return positions


def answered_keys(bootstrap: str, topics: list[str], partitions: int) -> set[str]:
    """Keys with a label or dead letter now: read every partition to its high watermark (no group join)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"answered-{time.time_ns()}",
                         "enable.auto.commit": False})
    ends = high_watermarks(bootstrap, [(t, p) for t in topics for p in range(partitions)])
    consumer.assign([TopicPartition(t, p, 0) for (t, p), end in ends.items() if end > 0])
    keys, read = set(), {tp: 0 for tp in ends}
    deadline = time.monotonic() + 60
    try:
        while any(read[tp] < end for tp, end in ends.items()) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is None:
                    keys.add(message.key().decode())
                    read[(message.topic(), message.partition())] = message.offset() + 1
    finally:
        consumer.close()
    return keys


def first_unanswered(positions: dict[str, tuple[int, int]], answered: set[str]) -> dict[int, int]:
    """Per partition, the lowest input offset with neither a label nor a dead letter (a commit must not pass it)."""
    result: dict[int, int] = {}
    for key, (partition, offset) in positions.items():
        if key not in answered:
            result[partition] = min(offset, result.get(partition, offset))
    return result


@pytest.mark.kafka_only(WRITES_REFUSED)
def test_an_output_topic_refusing_writes_stalls_without_loss_and_drains_once_it_accepts_them(
        broker, real_texts, workers, unique_name) -> None:
    """The send fault clears while the worker keeps running: no restart, nothing lost, no commit past it.

    At least once only: the refusal (a timestamp limit) also refuses the transaction coordinator's abort markers
    on that topic, which leaves an aborted transaction pending on Kafka for good, whatever the client does.
    """
    topic, partitions, group = unique_name, 3, f"g-{unique_name}"
    bootstrap = broker.bootstrap_servers
    create_stream(bootstrap, topic, partitions)
    worker = workers.start(bootstrap, topic, group, "--send-retry-backoff-max-s", "2")
    worker.wait_ready()
    before, after = json_records(real_texts[:150], "before"), json_records(real_texts[150:450], "after")
    produce(bootstrap, topic, before)
    assert reconcile(bootstrap, topic, [k for k, _ in before], timeout=90).lost([k for k, _ in before]) == []

    refuse_writes(bootstrap, f"{topic}.labels")  # from now on the broker refuses every label
    produce(bootstrap, topic, after)
    wait_until(lambda: not worker.alive() or worker.status("/readyz") == 503, 60, "/readyz to report the stall")
    time.sleep(15)  # the producer's retries (or aborted transactions) go on
    assert worker.alive(), f"the worker exited while the output topic refused records:\n{worker.log()}"
    status, body = worker.get("/readyz")
    assert status == 503 and f"{topic}.labels" in body, body
    assert worker.get("/healthz")[0] == 200  # alive: a restart would not fix the broker
    assert metric(worker, "lstm_worker_fetch_paused") == 1

    keys = [k for k, _ in before + after]
    positions = input_positions(bootstrap, topic, partitions, len(keys))
    stuck = first_unanswered(positions, answered_keys(bootstrap, [f"{topic}.labels", f"{topic}.dlq"], partitions))
    assert stuck, "every record was answered although the output topic refuses records"
    time.sleep(2)  # a few more commit intervals: none may pass a stuck record
    for partition, offset in committed_offsets(bootstrap, group, topic, partitions).items():
        assert offset <= stuck.get(partition, offset), f"partition {partition} committed past an unproduced record"

    accept_writes(bootstrap, f"{topic}.labels")  # the operator's fix, while the worker runs
    result = reconcile(bootstrap, topic, keys, timeout=180)
    assert result.lost(keys) == [], worker.log()
    assert sum(result.dead.values()) == 0
    wait_until(lambda: worker.status("/readyz") == 200, 60, "/readyz to report ready again")
    assert worker.starts == 1 and worker.terminate() == 0


def test_output_too_large_for_the_producer_is_dead_lettered_and_nothing_stalls(
        broker, real_texts, workers, mode, unique_name) -> None:
    """Fails on the old worker with --exactly-once: its smallest dead letter drops the key as well as the
    1.2 MB header (at-least-once keeps the key), so big-* come back without their key."""
    topic, bootstrap = unique_name, broker.bootstrap_servers
    create_stream(bootstrap, topic, partitions=2)
    # The producer takes requests up to max(1 MiB, 2 x --max-message-bytes) + 64 KiB = 1,114,112 bytes.
    worker = workers.start(bootstrap, topic, f"g-{topic}", *mode_flags(mode), "--max-message-bytes", "100000")
    worker.wait_healthy()
    normal = json_records(real_texts[:200])
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4_000_000})
    for key, value in normal:
        producer.produce(topic, key=key.encode(), value=value)
    # A small text with a 1.2 MB trace header: its label carries the header and cannot be produced.
    big_header = [f"big-{i}" for i in range(3)]
    for i, key in enumerate(big_header):
        producer.produce(topic, key=key.encode(), value=json.dumps({"text": real_texts[i]}).encode(),
                         headers=[("baggage", b"b" * 1_200_000)])
    producer.produce(topic, key=b"huge", value=b"x" * 1_500_000)  # oversize input, its dead letter is cut
    assert producer.flush(60) == 0
    keys = [k for k, _ in normal] + big_header + ["huge"]
    result = reconcile(bootstrap, topic, keys, timeout=120)
    assert result.lost(keys) == []
    assert all(result.outputs[k] == 1 for k, _ in normal)
    assert all(result.dead[k] == 1 for k in big_header) and result.dead["huge"] == 1
    assert result.dead_reasons == {"output_too_large": 3, "oversize": 1}
    assert metric(worker, "lstm_worker_dead_letters_total", 'reason="output_too_large"') == 3
    assert metric(worker, "lstm_worker_send_retries_total", f'topic="{topic}.dlq"') == 0
    assert worker.get("/readyz")[0] == 200 and worker.alive()
    assert worker.terminate() == 0
