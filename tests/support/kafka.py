"""Topics, producing, reading back and committed offsets, with confluent-kafka (librdkafka).

The worker talks kafka-python; the tests write its inputs and read its results with a different client,
so the accounting never trusts the worker's own Kafka library. Readers are assigned partitions (no
consumer group, no join wait) and stop at the end librdkafka reports for each partition
(``enable.partition.eof``), never at Tansu's ListOffsets answer (the last batch's base offset + 1, short
of the true end whenever that batch holds more than one record).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

COORDINATOR_NOT_READY = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                         KafkaError.COORDINATOR_NOT_AVAILABLE)
Headers = list[tuple[str, bytes]]
# librdkafka settings added to every client of a helper (``client_config=``): security, e.g.
# ``ApacheKafka.admin_config()`` on a broker with the authorizer on.
ClientConfig = dict[str, str] | None
# (key, value) or (key, value, headers); a str key is encoded as UTF-8.
Record = tuple[bytes | str | None, bytes | None] | tuple[bytes | str | None, bytes | None, Headers]


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int = -1  # the record's timestamp (CreateTime: set by the producer when it sent the record)

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name`` (None if absent)."""
        values = [v for k, v in self.headers if k == name]
        return values[-1] if values else None

    @property
    def is_dead_letter(self) -> bool:
        return self.topic.endswith(".dlq")

    def source(self) -> tuple[int, int]:
        """(input partition, input offset) this label or dead letter answers."""
        if self.is_dead_letter:
            return int(self.header("source.partition")), int(self.header("source.offset"))
        body = json.loads(self.value)
        return body["source"]["partition"], body["source"]["offset"]


def result_topics(topic: str) -> tuple[str, str]:
    """The worker's default output and dead-letter topics for input ``topic``."""
    return f"{topic}.labels", f"{topic}.dlq"


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 3,
                  client_config: ClientConfig = None) -> None:
    """Create ``names`` (each with ``partitions`` partitions) and wait until the broker confirmed them."""
    # Keep a reference until the futures resolve.
    admin = AdminClient({"bootstrap.servers": bootstrap, **(client_config or {})})
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
    for future in futures.values():
        future.result(timeout=30)


def create_stream(bootstrap: str, topic: str, partitions: int = 3,
                  client_config: ClientConfig = None) -> tuple[str, str, str]:
    """The input topic and the worker's default output and dead-letter topics; returns their names."""
    names = (topic, *result_topics(topic))
    create_topics(bootstrap, names, partitions, client_config)
    return names


def _encode_key(key: bytes | str | None) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


def produce(bootstrap: str, topic: str, records: Iterable[Record], pace_s: float = 0.0,
            client_config: ClientConfig = None) -> None:
    """Write ``records``; ``pace_s`` spreads them out so that faults land mid-stream. Fails unless all land."""
    # murmur2: the partitioner of the Java client and kafka-python (the worker), so a key maps to the same
    # partition number in the input and in the worker's outputs.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 4_000_000,
                         "partitioner": "murmur2_random", **(client_config or {})})
    failed: list[str] = []

    def delivered(error, _message) -> None:  # noqa: ANN001 - librdkafka callback
        if error is not None:
            failed.append(str(error))

    for record in records:
        key, value, *rest = record
        headers = rest[0] if rest else None
        while True:
            try:
                producer.produce(topic, key=_encode_key(key), value=value, headers=headers, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        producer.poll(0)
        if pace_s:
            time.sleep(pace_s)
    assert producer.flush(60) == 0, "the test producer could not deliver every input"
    assert failed == [], f"the broker refused inputs: {failed[:3]}"


def _partitions(consumer: Consumer, topics: Sequence[str]) -> list[TopicPartition]:
    found = []
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        assert metadata.error is None, f"{topic}: {metadata.error}"
        found += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)]
    return found


def _reader(bootstrap: str, isolation_level: str, client_config: ClientConfig = None) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-reader-{time.time_ns()}",
                     "enable.auto.commit": False, "isolation.level": isolation_level,
                     "enable.partition.eof": True, "fetch.wait.max.ms": 10, "fetch.message.max.bytes": 8_000_000,
                     "receive.message.max.bytes": 100_000_000, **(client_config or {})})


def _message(m) -> Message:  # noqa: ANN001 - confluent_kafka.Message
    return Message(m.topic(), m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or []),
                   m.timestamp()[1])


def read_all(bootstrap: str, topics: Sequence[str], isolation_level: str = "read_uncommitted",
             timeout: float = 60, client_config: ClientConfig = None) -> list[Message]:
    """Every record of ``topics`` up to the end of each partition as of this read; fails rather than return less.

    ``read_committed`` on Tansu still returns records of aborted transactions (it does not filter them).
    """
    consumer = _reader(bootstrap, isolation_level, client_config)
    try:
        partitions = _partitions(consumer, topics)
        consumer.assign(partitions)
        at_end: set[tuple[str, int]] = set()
        messages: dict[tuple[str, int, int], Message] = {}
        deadline = time.monotonic() + timeout
        while len(at_end) < len(partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {len(messages)} records of {list(topics)} and did not reach their end "
                                   f"in {timeout:.0f} s")
            for m in consumer.consume(num_messages=1000, timeout=0.2):
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add((m.topic(), m.partition()))
                        continue
                    raise AssertionError(f"reading {list(topics)}: {error}")
                messages[(m.topic(), m.partition(), m.offset())] = _message(m)
        return sorted(messages.values(), key=lambda m: (m.topic, m.partition, m.offset))
    finally:
        consumer.close()


def read_until(bootstrap: str, topics: Sequence[str], expected: int, timeout: float = 120,
               isolation_level: str = "read_uncommitted") -> list[Message]:
    """Records of ``topics`` from the beginning until ``expected`` arrived; returns what came in ``timeout``."""
    consumer = _reader(bootstrap, isolation_level)
    messages: dict[tuple[str, int, int], Message] = {}  # keyed by position: a re-fetch never counts twice
    try:
        consumer.assign(_partitions(consumer, topics))
        deadline = time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.2):
                if m.error() is None:
                    messages[(m.topic(), m.partition(), m.offset())] = _message(m)
    finally:
        consumer.close()
    return sorted(messages.values(), key=lambda m: (m.topic, m.partition, m.offset))


def high_watermarks(bootstrap: str, partitions: Sequence[tuple[str, int]],
                    timeout: float = 30) -> dict[tuple[str, int], int]:
    """Each partition's high watermark as a fetch reports it (not ListOffsets, see the module docstring)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watermarks-{time.time_ns()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(t, p, OFFSET_END) for t, p in partitions])
    deadline = time.monotonic() + timeout
    try:
        while True:
            highs = {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), cached=True)[1]
                     for t, p in partitions}
            if all(h >= 0 for h in highs.values()):
                return highs
            if time.monotonic() > deadline:
                unknown = sorted(k for k, h in highs.items() if h < 0)
                raise TimeoutError(f"no fetch reported a high watermark for {unknown}")
            consumer.consume(num_messages=1000, timeout=0.2)
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int,
                      client_config: ClientConfig = None) -> dict[int, int]:
    """The group's committed offset of each partition of ``topic`` (0 where none), read without joining it."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         **(client_config or {})})
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
                break
            except KafkaException as exc:  # a fresh Kafka answers NOT_COORDINATOR until its offsets topic exists
                if exc.args[0].code() not in COORDINATOR_NOT_READY or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()
    return {tp.partition: max(tp.offset, 0) for tp in found}


def wait_committed(bootstrap: str, group: str, topic: str, partitions: int, total: int,
                   timeout: float = 60, client_config: ClientConfig = None) -> dict[int, int]:
    """Committed offsets once they add up to ``total`` (or whatever they are after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        offsets = committed_offsets(bootstrap, group, topic, partitions, client_config)
        if sum(offsets.values()) >= total or time.monotonic() > deadline:
            return offsets
        time.sleep(0.3)


@dataclass
class Reconciliation:
    """How often each input key came back as a label and as a dead letter."""

    outputs: Counter
    dead: Counter
    dead_reasons: Counter

    def lost(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if self.outputs[k] + self.dead[k] == 0]

    def duplicates(self) -> int:
        return sum(c - 1 for c in self.outputs.values() if c > 1) + sum(c - 1 for c in self.dead.values() if c > 1)


def reconcile(bootstrap: str, topic: str, expected_keys: Iterable[str], timeout: float,
              topics: Sequence[str] | None = None, settle_s: float = 3.0,
              isolation_level: str = "read_uncommitted", client_config: ClientConfig = None) -> Reconciliation:
    """Read results until every key is accounted for (or ``timeout``), then ``settle_s`` more for late duplicates.

    ``topics`` replaces the default ``<topic>.labels`` and ``<topic>.dlq``; those ending in .dlq hold dead letters.
    """
    consumer = _reader(bootstrap, isolation_level, client_config)
    outputs: Counter = Counter()
    dead: Counter = Counter()
    reasons: Counter = Counter()
    wanted = set(expected_keys)
    seen: set[tuple[str, int, int]] = set()
    deadline = time.monotonic() + timeout
    settle_until = None
    try:
        consumer.assign(_partitions(consumer, topics or result_topics(topic)))
        while time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.3):
                if m.error() is not None or (m.topic(), m.partition(), m.offset()) in seen:
                    continue
                seen.add((m.topic(), m.partition(), m.offset()))
                key = (m.key() or b"").decode()
                if m.topic().endswith(".dlq"):
                    dead[key] += 1
                    reasons[dict(m.headers() or []).get("error.type", b"?").decode()] += 1
                else:
                    outputs[key] += 1
            if settle_until is None and all(outputs[k] + dead[k] for k in wanted):
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() > settle_until:
                break
    finally:
        consumer.close()
    return Reconciliation(outputs, dead, reasons)
