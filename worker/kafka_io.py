"""Thin kafka-python wrappers: the only module of the worker that talks to the broker.

The clients are built from ``worker.kafka_config``'s one consumer and one producer
configuration, which serve both delivery guarantees. Start-up checks turn kafka-python's
errors into one line naming the fix.
"""

from __future__ import annotations

import time
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import (
    AuthorizationError,
    InvalidProducerEpochError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    ProducerFencedError,
    TransactionCoordinatorFencedError,
    UnsupportedVersionError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from worker.exceptions import StartupError
from worker.kafka_config import connect_error, consumer_config, not_authorized, producer_config, refused_permission
from worker.pipeline.ports import Headers, InputRecord, RebalanceHooks
from worker.settings import WorkerSettings

# Another producer registered our transactional id, or the broker aborted our transaction and bumped the epoch.
FENCING_ERRORS = (ProducerFencedError, InvalidProducerEpochError, TransactionCoordinatorFencedError)
# A refused fetch fails one poll and the polls between fetches succeed: refused until records arrive or no
# refusal came for this long.
REFUSAL_HOLD_S = 5.0
# Each of the lag's two requests waits at most this long, on the loop thread.
LAG_TIMEOUT_MS = 1000


class RebalanceListener(AsyncConsumerRebalanceListener):
    """Runs the pipeline's hooks around a rebalance, on the consumer's I/O thread, while the loop is in ``poll``.

    Nothing here waits for sends: the commit on revocation covers what is already
    answered and is awaited with ``commit_async``, so heartbeats go on. Lost
    partitions (evicted from the group) are released without a commit: their
    offsets may already belong to another member. kafka-python keeps the fetch
    position of a partition that is revoked and assigned again in the same
    rebalance, but its unanswered records were dropped on release, so such a
    partition is rewound to its first unanswered offset.
    """

    def __init__(self, consumer: KafkaConsumer, hooks: RebalanceHooks):
        self._consumer, self._hooks = consumer, hooks
        self._rewind: dict[TopicPartition, int] = {}

    async def on_partitions_revoked(self, revoked):  # noqa: ANN001 - kafka-python API
        partitions = sorted(revoked)
        if not partitions:
            return
        offsets = self._hooks.offsets_to_commit(partitions)
        self._rewind = self._hooks.resume_offsets(partitions)
        committed, error = None, None
        if offsets:
            try:
                await self._consumer.commit_async({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
                committed = offsets
            except KafkaError as exc:
                error = exc
        self._hooks.release(partitions, lost=False, committed=committed, error=error)

    async def on_partitions_lost(self, lost):  # noqa: ANN001
        partitions = sorted(lost)
        self._rewind = self._hooks.resume_offsets(partitions)
        self._hooks.release(partitions, lost=True, committed=None, error=None)

    async def on_partitions_assigned(self, assigned):  # noqa: ANN001
        partitions = sorted(assigned)
        # A partition still held (assigned again with no revocation in between, which a client should not do)
        # is rewound to its first unanswered record too: its in-flight state is dropped on assignment.
        rewind = {**self._hooks.resume_offsets(partitions), **self._rewind}
        for tp in partitions:
            if tp in rewind:
                self._consumer.seek(tp, rewind[tp])  # local state only: allowed on the I/O thread
        self._rewind = {}
        self._hooks.assigned(partitions)


class KafkaSource:
    """A subscribed consumer whose offsets the pipeline commits (or hands to a transaction)."""

    def __init__(self, settings: WorkerSettings):
        try:
            self.consumer = KafkaConsumer(**consumer_config(settings))
        except (KafkaError, OSError) as exc:
            raise connect_error(settings, exc) from None
        self.topic = settings.topic
        self._settings = settings
        self._refused: tuple[str, float] | None = None  # (the permission refused, when: monotonic)

    def check_topic(self) -> int:
        partitions = self.consumer.partitions_for_topic(self.topic)
        try:  # the group's committed offset: refused without Read (Describe) on the topic or on the group
            self.consumer.committed(TopicPartition(self.topic, min(partitions, default=0)), timeout_ms=5000)
        except AuthorizationError as exc:
            self.consumer.close(autocommit=False, timeout_ms=1000)
            raise not_authorized(self._settings, exc) from None
        except KafkaError:  # a missing topic, a slow broker: said below, or found by the loop
            pass
        if not partitions:
            self.consumer.close(autocommit=False, timeout_ms=1000)
            raise StartupError(f"input topic {self.topic!r} does not exist: create it "
                               f"(`lstm-worker topics create {self.topic}`) or fix --topic")
        return len(partitions)

    def subscribe(self, hooks: RebalanceHooks) -> None:
        self.consumer.subscribe([self.topic], listener=RebalanceListener(self.consumer, hooks))

    def poll(self, timeout_ms: int, max_records: int) -> list[InputRecord]:
        try:
            batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except AuthorizationError as exc:  # an ACL taken away while running: wait for it, reading nothing
            self._refused = f"{refused_permission(self._settings, exc)} ({type(exc).__name__})", time.monotonic()
            time.sleep(timeout_ms / 1000)  # what poll would have waited: the loop does not spin
            return []
        except KafkaConnectionError:  # e.g. no OAuth token for a reconnect: the client retries; /readyz says why
            time.sleep(timeout_ms / 1000)
            return []
        if self._refused is not None and (batches or time.monotonic() - self._refused[1] > REFUSAL_HOLD_S):
            self._refused = None
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

    def group_metadata(self) -> Any:
        """Generation and member id: lets the broker fence a zombie member's transactional offsets (KIP-447)."""
        return self.consumer.group_metadata()

    def refused(self) -> str | None:
        """The permission the broker refused a poll (Read on the topic or the group); None once it reads again."""
        return self._refused[0] if self._refused is not None else None

    def membership_in_doubt(self) -> bool:
        """True while no heartbeat was answered for longer than the session timeout.

        The process was frozen, or starved, or the coordinator is unreachable: the group may already have
        given our partitions to another member, and a commit now could move their offsets back (a broker
        without KIP-447's generation check on transactional offsets accepts it). The pipeline commits nothing
        until a heartbeat is answered again or the loss is known. kafka-python has no public call for this.
        """
        heartbeat = getattr(getattr(self.consumer, "_coordinator", None), "heartbeat", None)
        return bool(heartbeat is not None and heartbeat.session_timeout_expired())

    def positions(self) -> dict[TopicPartition, int]:
        """The next offset ``poll`` hands out per assigned partition (known ones only; no round trip).

        It passes transaction markers and aborted records as the consumer skips them, and moves only when
        ``poll`` returns records, never with what is fetched and still buffered.
        """
        result = {}
        for tp in self.consumer.assignment():
            try:
                position = self.consumer.position(tp, timeout_ms=0)
            except KafkaError:  # not yet known (a reset in progress)
                continue
            if position is not None:
                result[tp] = position
        return result

    def lag(self) -> dict[TopicPartition, int]:
        """Log end minus the group's committed offset per assigned partition, asked of the broker.

        Two round trips (the committed offsets, the end offsets), bounded by ``LAG_TIMEOUT_MS``, so it keeps
        moving while fetching is paused. The log end is the larger of the broker's ListOffsets answer and the
        last fetch's high watermark: the log end never moves back, and some brokers (Tansu) answer ListOffsets
        with the last batch's first offset + 1. A partition without a commit counts from the position.
        Raises ``KafkaError`` when the broker does not answer in time.
        """
        partitions = sorted(self.consumer.assignment())
        if not partitions:
            return {}
        coordinator = self.consumer._coordinator  # noqa: SLF001 - one request for all partitions, bounded
        committed = coordinator.fetch_committed_offsets(partitions, timeout_ms=LAG_TIMEOUT_MS)
        ends = self.consumer.end_offsets(partitions, timeout_ms=LAG_TIMEOUT_MS)
        positions = self.positions()
        result = {}
        for tp in partitions:
            end = max(ends.get(tp) or 0, self.consumer.highwater(tp) or 0)
            done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else positions.get(tp)
            if done is not None:
                result[tp] = max(0, end - done)
        return result

    def close(self, timeout_s: float) -> None:
        """Leave the group within ``timeout_s`` (the drain deadline); commits are the pipeline's, never close()'s."""
        self.consumer.close(autocommit=False, timeout_ms=max(100, int(timeout_s * 1000)))


class KafkaSink:
    """The producer: asynchronous sends returning futures, and transactions with ``--exactly-once``.

    kafka-python waits for a transaction's outcome without a limit; here every wait
    is bounded, and a wait that runs out raises ``KafkaTimeoutError`` (the
    producer is then replaced, see :mod:`worker.pipeline.exactly_once`).
    """

    def __init__(self, settings: WorkerSettings):
        self.transactional_id = settings.transactional_id
        self.settings = settings
        try:
            self.producer = KafkaProducer(**producer_config(settings))
        except (KafkaError, OSError) as exc:
            raise connect_error(settings, exc) from None

    def check_topic(self, topic: str, option: str) -> None:
        """Fetch metadata for an output topic (brokers with auto-creation create it here)."""
        try:
            partitions = self.producer.partitions_for(topic)
        except AuthorizationError as exc:
            raise not_authorized(self.settings, exc, output_topic=topic) from None
        except KafkaError:
            partitions = None
        if not partitions:
            raise StartupError(f"output topic {topic!r} does not exist and the broker did not create it: "
                               f"create it or set {option}")

    def init_transactions(self) -> None:
        """Register the transactional id; the broker aborts a predecessor's open transaction and fences it."""
        try:
            self.producer.init_transactions()
        except UnsupportedVersionError:
            raise StartupError("the broker does not support transactions: run without --exactly-once") from None
        except AuthorizationError as exc:
            raise not_authorized(self.settings, exc) from None
        except KafkaError as exc:
            raise StartupError(f"cannot start transactions for --transactional-id {self.transactional_id!r} "
                               f"({type(exc).__name__}: {exc})") from None

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> Any:
        return self.producer.send(topic, key=key, value=value, headers=headers)

    def flush(self, timeout_s: float) -> None:
        self.producer.flush(timeout=timeout_s)

    def begin(self) -> None:
        self.producer.begin_transaction()

    def send_offsets(self, offsets: dict[TopicPartition, int], group_metadata: Any, timeout_s: float) -> None:
        manager = self.producer._transaction_manager  # noqa: SLF001 - the public call waits without a limit
        result = manager.send_offsets_to_transaction(
            {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}, group_metadata)
        self._await(result, timeout_s, "adding the offsets to the transaction")

    def commit(self, timeout_s: float) -> None:
        self._await(self.producer._transaction_manager.begin_commit(), timeout_s, "committing the transaction")  # noqa: SLF001

    def abort(self, timeout_s: float) -> None:
        self._await(self.producer._transaction_manager.begin_abort(), timeout_s, "aborting the transaction")  # noqa: SLF001

    def _await(self, result: Any, timeout_s: float, what: str) -> None:
        self.producer._sender.wakeup()  # noqa: SLF001 - as the public calls do
        if not result.wait(timeout_ms=max(1, int(timeout_s * 1000))):
            raise KafkaTimeoutError(f"no answer from the broker within {timeout_s:.1f} s while {what}")

    def fenced_by(self, exc: BaseException) -> BaseException | None:
        """The fencing error behind ``exc``, if this producer was fenced; else ``None``.

        After a fatal error kafka-python raises a generic KafkaError from every
        transactional call; the cause is kept on its transaction manager.
        """
        if isinstance(exc, FENCING_ERRORS):
            return exc
        cause = self.broken()
        return cause if isinstance(cause, FENCING_ERRORS) else None

    def broken(self) -> BaseException | None:
        """The error that left this producer unusable, if one did (kept on kafka-python's transaction manager).

        kafka-python makes some refusals fatal to an idempotent producer, a topic's Write ACL taken away among
        them: every later send fails with the same error until the producer is replaced.
        """
        manager = getattr(self.producer, "_transaction_manager", None)
        return manager.last_error if manager is not None and manager.has_fatal_error() else None

    def close(self, timeout_s: float) -> None:
        self.producer.close(timeout=max(0.0, timeout_s))
