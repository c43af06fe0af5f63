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

Both delivery modes must behave alike: a refused send (or a transaction that keeps failing) is retried with
back-off, the worker stays up and reports not ready, and only a real fence would make it exit.
"""

from __future__ import annotations

import json
import re
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from tests.support.data import json_records
from tests.support.kafka import committed_offsets, create_stream, create_topics, high_watermarks, produce, reconcile
from tests.support.workers import AT_LEAST_ONCE, WorkerProcess, mode_flags, wait_until


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


def test_unwritable_output_topic_stalls_without_loss_and_drains_after_the_fix(
        schema_broker, real_texts, workers, mode) -> None:
    """Fails on the old worker with --exactly-once: it gives up after 5 aborted transactions and exits 1."""
    topic, partitions, group = "unwritable", 3, "g-unwritable"
    bootstrap = schema_broker.bootstrap_servers
    create_stream(bootstrap, topic, partitions)
    worker = workers.start(bootstrap, topic, group, *mode_flags(mode), "--send-retry-backoff-max-s", "2")
    worker.wait_ready()
    before, after = json_records(real_texts[:150], "before"), json_records(real_texts[150:450], "after")
    produce(bootstrap, topic, before)
    assert reconcile(bootstrap, topic, [k for k, _ in before], timeout=90).lost([k for k, _ in before]) == []

    schema_broker.reject_records(f"{topic}.labels")  # from now on the broker refuses every label
    produce(bootstrap, topic, after)
    wait_until(lambda: not worker.alive() or worker.status("/readyz") == 503, 60, "/readyz to report the stall")
    time.sleep(15)  # several retries (or aborted transactions) at the 2 s back-off cap
    assert worker.alive(), f"the worker exited while the output topic refused records:\n{worker.log()}"
    status, body = worker.get("/readyz")
    assert status == 503 and f"{topic}.labels" in body and "InvalidRecordError" in body
    assert worker.get("/healthz")[0] == 200  # alive: a restart would not fix the broker
    assert metric(worker, "lstm_worker_fetch_paused") == 1

    keys = [k for k, _ in before + after]
    positions = input_positions(bootstrap, topic, partitions, len(keys))
    stuck = first_unanswered(positions, answered_keys(bootstrap, [f"{topic}.labels", f"{topic}.dlq"], partitions))
    assert stuck, "every record was answered although the output topic refuses records"
    time.sleep(2)  # a few more commit intervals: none may pass a stuck record
    for partition, offset in committed_offsets(bootstrap, group, topic, partitions).items():
        assert offset <= stuck.get(partition, offset), f"partition {partition} committed past an unproduced record"

    assert worker.terminate(timeout=40) == 0  # SIGTERM drains and exits 0 while a send is stuck
    for partition, offset in committed_offsets(bootstrap, group, topic, partitions).items():
        assert offset <= stuck.get(partition, offset), f"partition {partition} committed past it on shutdown"
    if mode == AT_LEAST_ONCE:  # the operator's hint in the log (exactly-once logs its aborts its own way)
        retries = worker.events("send_retry")
        assert retries and all(e["topic"] == f"{topic}.labels" and "schema" in e["fix"] for e in retries)

    # The fix: this broker never forgets a schema, so the operator points the worker at a writable topic.
    create_topics(bootstrap, [f"{topic}.fixed"], partitions)
    worker.extra = (*worker.extra, "--output-topic", f"{topic}.fixed")
    worker.start()
    worker.wait_ready()
    result = reconcile(bootstrap, topic, keys, timeout=120,
                       topics=[f"{topic}.labels", f"{topic}.fixed", f"{topic}.dlq"])
    assert result.lost(keys) == []
    assert sum(result.dead.values()) == 0
    assert worker.terminate() == 0


def test_output_too_large_for_the_producer_is_dead_lettered_and_nothing_stalls(
        broker, real_texts, workers, mode) -> None:
    """Fails on the old worker with --exactly-once: its smallest dead letter drops the key as well as the
    1.2 MB header (at-least-once keeps the key), so big-* come back without their key."""
    topic, bootstrap = "toolarge", broker.bootstrap_servers
    create_stream(bootstrap, topic, partitions=2)
    # The producer takes requests up to max(1 MiB, 2 x --max-message-bytes) + 64 KiB = 1,114,112 bytes.
    worker = workers.start(bootstrap, topic, "g-toolarge", *mode_flags(mode), "--max-message-bytes", "100000")
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
