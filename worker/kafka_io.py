"""Thin kafka-python wrappers: the only module of the worker that talks to the broker.

The loop sees a :class:`KafkaSource` (poll / commit / pause / lag) and a
:class:`KafkaSink` (asynchronous send returning a future), so it can be tested
with in-memory fakes. Start-up checks turn kafka-python's errors into one
line naming the fix. The transactional clients of ``--exactly-once`` are in
:mod:`worker.kafka_transactional`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from worker.exceptions import StartupError
from worker.settings import WorkerSettings

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class InputRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class SendFuture(Protocol):
    def add_callback(self, fn: Callable[..., Any], *args: Any) -> Any: ...
    def add_errback(self, fn: Callable[..., Any], *args: Any) -> Any: ...


class RebalanceHooks(Protocol):
    """What the loop does around a rebalance; see :class:`_Listener` for the order of calls."""

    def prepare_revoke(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    def resume_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    def finish_revoke(self, partitions: list[TopicPartition], committed: dict[TopicPartition, int] | None,
                      error: Exception | None) -> None: ...
    def lost(self, partitions: list[TopicPartition]) -> None: ...
    def assigned(self, partitions: list[TopicPartition]) -> None: ...


class _Listener(AsyncConsumerRebalanceListener):
    """Rebalance callbacks for kafka-python 3, which runs them on the consumer's I/O thread.

    A blocking ``consumer.commit()`` is refused there, so the commit of what is
    safe on revocation is awaited with ``commit_async`` (heartbeats go on).
    Order on revoke: flush sends and compute safe offsets, commit them, then drop
    the partitions' in-flight state. Lost partitions (evicted from the group) are
    only dropped: their offsets may already belong to another member.

    kafka-python keeps the fetch position of a partition that is revoked and
    assigned again in the same rebalance; the records between the last safe
    offset and that position were dropped with the in-flight state, so such a
    partition is rewound (``seek``) to its safe offset on assignment.
    """

    def __init__(self, consumer: KafkaConsumer, hooks: RebalanceHooks):
        self._consumer, self._hooks = consumer, hooks
        self._rewind: dict[TopicPartition, int] = {}

    async def on_partitions_revoked(self, revoked):  # noqa: ANN001 - kafka-python API
        partitions = sorted(revoked)
        offsets = self._hooks.prepare_revoke(partitions) if partitions else {}
        self._rewind = self._hooks.resume_offsets(partitions)
        committed, error = None, None
        if offsets:
            try:
                await self._consumer.commit_async({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
                committed = offsets
            except KafkaError as exc:
                error = exc
        self._hooks.finish_revoke(partitions, committed, error)

    async def on_partitions_lost(self, lost):  # noqa: ANN001
        self._rewind = self._hooks.resume_offsets(sorted(lost))
        self._hooks.lost(sorted(lost))

    async def on_partitions_assigned(self, assigned):  # noqa: ANN001
        partitions = sorted(assigned)
        for tp in partitions:
            if tp in self._rewind:
                self._consumer.seek(tp, self._rewind[tp])  # local state only: allowed on the I/O thread
        self._rewind = {}
        self._hooks.assigned(partitions)


def _connect_error(settings: WorkerSettings, exc: Exception) -> StartupError:
    servers = ",".join(settings.bootstrap_servers)
    return StartupError(
        f"cannot reach Kafka at {servers} ({type(exc).__name__}): check --bootstrap-servers and the "
        "security options, or start a local broker with `lstm-worker broker`"
    )


class KafkaSource:
    """A subscribed consumer with manual commits."""

    def __init__(self, settings: WorkerSettings, bootstrap_timeout_ms: int = 10_000,
                 isolation_level: str = "read_uncommitted"):
        try:
            self.consumer = KafkaConsumer(
                bootstrap_servers=list(settings.bootstrap_servers),
                group_id=settings.group_id,
                client_id=f"lstm-worker-{settings.group_id}",
                enable_auto_commit=False,  # commits follow broker acks of our outputs, see offsets.py
                auto_offset_reset="earliest",
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=max(500, settings.session_timeout_ms // 3),
                max_poll_records=max(settings.batch_size * 4, 500),
                # Also the rebalance timeout: bounds how long a group waits for a stuck member. Our poll loop
                # never waits on inference, so a minute is ample.
                max_poll_interval_ms=60_000,
                fetch_max_bytes=16 * 1024 * 1024,  # bounds fetched-but-unpolled memory (RSS budget)
                max_partition_fetch_bytes=max(1 << 20, settings.max_message_bytes + 1024),
                fetch_min_bytes=1,
                fetch_max_wait_ms=25,  # bounds the latency an idle fetch adds (some brokers hold a fetch for all of it)
                bootstrap_timeout_ms=bootstrap_timeout_ms,
                isolation_level=isolation_level,
                **settings.security.client_config(),
            )
        except (KafkaError, OSError) as exc:
            raise _connect_error(settings, exc) from None
        self.topic = settings.topic

    def check_topic(self) -> int:
        partitions = self.consumer.partitions_for_topic(self.topic)
        if not partitions:
            self.consumer.close(autocommit=False)
            raise StartupError(f"input topic {self.topic!r} does not exist: create it "
                               f"(kafka-topics.sh --create --topic {self.topic}) or fix --topic")
        return len(partitions)

    def subscribe(self, hooks: RebalanceHooks) -> None:
        self.consumer.subscribe([self.topic], listener=_Listener(self.consumer, hooks))

    def poll(self, timeout_ms: int, max_records: int) -> list[InputRecord]:
        batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return [
            InputRecord(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers or []), r.timestamp)
            for records in batches.values() for r in records
        ]

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        # Bounded: with the coordinator unreachable an unbounded commit would stop polling for request_timeout.
        self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()},
                             timeout_ms=5000)

    def pause(self) -> None:
        self.consumer.pause(*self.consumer.assignment())

    def resume(self) -> None:
        self.consumer.resume(*self.consumer.paused())

    def assignment(self) -> set[TopicPartition]:
        return set(self.consumer.assignment())

    def lag(self) -> dict[TopicPartition, int]:
        """High watermark minus position, from the last fetch (no extra round trip)."""
        result = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=0)
            except KafkaError:
                continue
            if position is not None:
                result[tp] = max(0, high - position)
        return result

    def close(self) -> None:
        self.consumer.close(autocommit=False)  # commits are ours; close() leaves the group


class KafkaSink:
    """An asynchronous producer: ``send`` returns a future, acks drive the offset tracker."""

    def __init__(self, settings: WorkerSettings, bootstrap_timeout_ms: int = 10_000):
        try:
            self.producer = KafkaProducer(
                bootstrap_servers=list(settings.bootstrap_servers),
                client_id=f"lstm-worker-{settings.group_id}",
                acks="all",
                # Idempotence keeps per-partition order with several requests in flight and retries.
                enable_idempotence=True,
                max_in_flight_requests_per_connection=5,
                linger_ms=5,
                batch_size=256 * 1024,
                compression_type=None,
                max_request_size=settings.max_dead_letter_bytes + 65536,  # room for key, headers, batch overhead
                # send() waits this long for a missing topic's metadata on the calling thread (the consumer
                # thread for dead letters): well below the 30 s liveness threshold of /healthz.
                max_block_ms=10_000,
                bootstrap_timeout_ms=bootstrap_timeout_ms,
                **settings.security.client_config(),
            )
        except (KafkaError, OSError) as exc:
            raise _connect_error(settings, exc) from None

    def check_topic(self, topic: str, option: str) -> None:
        """Fetch metadata for an output topic (brokers with auto-creation create it here)."""
        try:
            partitions = self.producer.partitions_for(topic)
        except KafkaError:
            partitions = None
        if not partitions:
            raise StartupError(f"output topic {topic!r} does not exist and the broker did not create it: "
                               f"create it or set {option}")

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> SendFuture:
        return self.producer.send(topic, key=key, value=value, headers=headers)

    def flush(self, timeout_s: float) -> None:
        self.producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float) -> None:
        self.producer.close(timeout=timeout_s)
