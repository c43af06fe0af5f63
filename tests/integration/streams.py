"""Reading and writing test streams with kafka-python, without a consumer group (no join wait)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    def header(self, name: str) -> bytes | None:
        values = [v for k, v in self.headers if k == name]
        return values[-1] if values else None


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, Headers]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4_000_000)
    try:
        for key, value, headers in records:
            producer.send(topic, key=key, value=value, headers=headers)
        producer.flush(30)
    finally:
        producer.close(5)


@contextmanager
def _reader(bootstrap: str, topics: list[str], isolation_level: str = "read_uncommitted"
            ) -> Iterator[tuple[KafkaConsumer, list[TopicPartition]]]:
    """A consumer assigned to every partition of ``topics``, at the beginning (no group, no join wait)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation_level)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        yield consumer, partitions
    finally:
        consumer.close()


def _poll_into(consumer: KafkaConsumer, messages: dict[tuple[str, int, int], Message]) -> None:
    # Keyed by position: a fetch in flight across the seek can hand a record over twice, and counting
    # it twice would end a wait early (a test then stops a worker before it has finished).
    for records in consumer.poll(timeout_ms=200).values():
        for r in records:
            messages[(r.topic, r.partition, r.offset)] = Message(r.topic, r.partition, r.offset, r.key, r.value,
                                                                 list(r.headers or []))


def read_until(bootstrap: str, topics: list[str], expected: int, timeout: float = 120) -> list[Message]:
    """Every message of ``topics`` from the beginning, until ``expected`` arrived (or ``timeout``)."""
    messages: dict[tuple[str, int, int], Message] = {}
    with _reader(bootstrap, topics) as (consumer, _):
        deadline = time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            _poll_into(consumer, messages)
    return list(messages.values())


def read_all(bootstrap: str, topics: list[str], isolation_level: str = "read_uncommitted",
             timeout: float = 60) -> list[Message]:
    """Everything in ``topics`` up to the high watermarks this read sees; fails rather than return less.

    The end of each partition is the high watermark a fetch reports, not ListOffsets: Tansu answers
    ListOffsets(latest) with the last record batch's base offset + 1, which would end the read early.
    """
    messages: dict[tuple[str, int, int], Message] = {}
    with _reader(bootstrap, topics, isolation_level) as (consumer, partitions):
        deadline = time.monotonic() + timeout
        while not _at_high_watermarks(consumer, partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {len(messages)} records of {topics} and did not reach their end "
                                   f"in {timeout:.0f} s")
            _poll_into(consumer, messages)
    return list(messages.values())


def _at_high_watermarks(consumer: KafkaConsumer, partitions: list[TopicPartition]) -> bool:
    for tp in partitions:
        high = consumer.highwater(tp)  # None until a fetch for the partition has come back
        if high is None or consumer.position(tp) < high:
            return False
    return True
