"""Produce failures with a real broker and real worker processes: nothing lost, no commit past, no crash loop.

What the development broker (Tansu 0.6) lets us inject, probed before writing these tests:

- It creates any topic a client asks metadata for, so a missing output topic never reaches the worker here
  (the start-up refusal on brokers without auto-creation is tested in tests/worker/test_delivery.py).
- It enforces no size limit (``max.message.bytes`` is accepted on a topic and ignored; 6 MB records pass),
  so "too large" is the producer's limit (``max_request_size``), not the broker's.
- DeleteTopics acknowledges later writes into the deleted topic and loses some of them: a broker bug a
  worker cannot guard against, so topic deletion is not used.
- Its file schema registry rejects records that do not match ``<topic>.json`` with InvalidRecordError, and
  picks up a schema that appears while it runs: the output topic becomes unwritable mid-stream. It never
  drops a schema it has loaded, and after one rejection kafka-python's idempotent producer has every later
  record refused on Tansu, whatever the topic. So the fix here is the operator's other fix: restart the
  worker onto a writable output topic. Recovery without a restart is tested with fakes in test_delivery.py.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.faults.harness import WorkerProcess, create_topics, high_watermarks, json_records, produce, read_all
from tests.schema_broker import SchemaBroker


@pytest.fixture
def schema_broker(tmp_path: Path) -> Iterator[SchemaBroker]:
    with SchemaBroker(tmp_path / "broker") as running:
        yield running


def get(worker: WorkerProcess, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(worker: WorkerProcess, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, get(worker, "/metrics")[1], re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


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


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: max(tp.offset, 0) for tp in offsets}


def first_unanswered(positions: dict[str, tuple[int, int]], answered: set[str]) -> dict[int, int]:
    """Per partition, the lowest input offset with neither a label nor a dead letter (a commit must not pass it)."""
    result: dict[int, int] = {}
    for key, (partition, offset) in positions.items():
        if key not in answered:
            result[partition] = min(offset, result.get(partition, offset))
    return result


def test_unwritable_output_topic_stalls_without_loss_and_drains_after_the_fix(
        schema_broker, tiny_bundle_dir, real_texts, workers, tmp_path) -> None:
    topic, partitions, group = "unwritable", 3, "g-unwritable"
    bootstrap = schema_broker.bootstrap_servers
    create_topics(bootstrap, topic, partitions)
    worker = WorkerProcess(bootstrap, topic, tiny_bundle_dir, group, tmp_path,
                           extra=("--send-retry-backoff-max-s", "2")).start()
    workers.append(worker)
    worker.wait_ready()
    wait_until(lambda: get(worker, "/readyz")[0] == 200, 60, "partitions assigned")
    before, after = json_records(real_texts[:150], "before"), json_records(real_texts[150:450], "after")
    produce(bootstrap, topic, before)
    assert read_all(bootstrap, topic, [k for k, _ in before], timeout=90).lost([k for k, _ in before]) == []

    schema_broker.reject_records(f"{topic}.labels")  # from now on the broker refuses every label
    produce(bootstrap, topic, after)
    labels = f'topic="{topic}.labels"'
    wait_until(lambda: metric(worker, "lstm_worker_send_retries_total", labels) >= 3, 60, "three retries")
    status, body = get(worker, "/readyz")
    assert status == 503 and f"{topic}.labels" in body and "InvalidRecordError" in body
    assert get(worker, "/healthz")[0] == 200 and worker.alive()  # alive: a restart would not fix the broker
    assert metric(worker, "lstm_worker_send_stalled") == 1 and metric(worker, "lstm_worker_fetch_paused") == 1

    keys = [k for k, _ in before + after]
    positions = input_positions(bootstrap, topic, partitions, len(keys))
    stuck = first_unanswered(positions, answered_keys(bootstrap, [f"{topic}.labels", f"{topic}.dlq"], partitions))
    assert stuck, "every record was answered although the output topic refuses records"
    time.sleep(2)  # a few more commit intervals: none may pass a stuck record
    for partition, offset in committed(bootstrap, group, topic, partitions).items():
        assert offset <= stuck.get(partition, offset), f"partition {partition} committed past an unproduced record"

    assert worker.terminate(timeout=40) == 0  # SIGTERM drains and exits 0 while a send is stuck
    for partition, offset in committed(bootstrap, group, topic, partitions).items():
        assert offset <= stuck.get(partition, offset), f"partition {partition} committed past it on shutdown"
    log = [json.loads(line) for line in (tmp_path / next(
        p.name for p in tmp_path.iterdir() if p.name.startswith(f"worker-{group}"))).read_text().splitlines()
        if line.startswith("{")]
    retries = [line for line in log if line.get("event") == "send_retry"]
    assert retries and all(line["topic"] == f"{topic}.labels" and "schema" in line["fix"] for line in retries)

    # The fix: this broker never forgets a schema, so the operator points the worker at a writable topic.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(f"{topic}.fixed", num_partitions=partitions, replication_factor=1)])[
        f"{topic}.fixed"].result(30)
    worker.extra = ("--output-topic", f"{topic}.fixed")
    worker.start()
    worker.wait_ready()
    result = read_all(bootstrap, topic, keys, timeout=120,
                      topics=[f"{topic}.labels", f"{topic}.fixed", f"{topic}.dlq"])
    assert result.lost(keys) == []
    assert sum(result.dead.values()) == 0
    assert worker.terminate() == 0


def test_output_too_large_for_the_producer_is_dead_lettered_and_nothing_stalls(
        broker, tiny_bundle_dir, real_texts, workers, tmp_path) -> None:
    topic, bootstrap = "toolarge", broker.bootstrap_servers
    create_topics(bootstrap, topic, partitions=2)
    # The producer takes requests up to max(1 MiB, 2 x --max-message-bytes) + 64 KiB = 1,114,112 bytes.
    worker = WorkerProcess(bootstrap, topic, tiny_bundle_dir, "g-toolarge", tmp_path,
                           extra=("--max-message-bytes", "100000")).start()
    workers.append(worker)
    worker.wait_ready()
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
    result = read_all(bootstrap, topic, keys, timeout=120)
    assert result.lost(keys) == []
    assert all(result.outputs[k] == 1 for k, _ in normal)
    assert all(result.dead[k] == 1 for k in big_header) and result.dead["huge"] == 1
    assert result.dead_reasons == {"output_too_large": 3, "oversize": 1}
    assert metric(worker, "lstm_worker_dead_letters_total", 'reason="output_too_large"') == 3
    assert metric(worker, "lstm_worker_send_retries_total", f'topic="{topic}.dlq"') == 0
    assert get(worker, "/readyz")[0] == 200 and worker.alive()
    assert worker.terminate() == 0
