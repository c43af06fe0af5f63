"""kafka-python clients of ``--exactly-once``: a read_committed consumer and a transactional producer.

Built like :class:`~worker.kafka_io.KafkaSource` and :class:`~worker.kafka_io.KafkaSink`
(same settings, same start-up errors); the loop that drives them is
:mod:`worker.pipeline.transactional`.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer
from kafka.errors import (
    InvalidProducerEpochError,
    KafkaError,
    ProducerFencedError,
    TransactionCoordinatorFencedError,
    UnsupportedVersionError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from worker.exceptions import StartupError
from worker.kafka_io import Headers, KafkaSink, KafkaSource, _connect_error
from worker.settings import WorkerSettings

# Another producer registered our transactional id (InitProducerId bumped the epoch): we are the zombie.
FENCING_ERRORS = (ProducerFencedError, InvalidProducerEpochError, TransactionCoordinatorFencedError)
# Bounds how long a crashed worker's open transaction holds back read_committed readers when no successor with
# the same transactional id comes to abort it sooner. One batch takes well under a second.
TRANSACTION_TIMEOUT_MS = 30_000


class TransactionalSource(KafkaSource):
    """A ``read_committed`` consumer whose offsets move only inside the producer's transactions."""

    def __init__(self, settings: WorkerSettings, bootstrap_timeout_ms: int = 10_000):
        super().__init__(settings, bootstrap_timeout_ms, isolation_level="read_committed")

    def seek(self, offsets: dict[TopicPartition, int]) -> None:
        """Rewind to ``offsets``; partitions no longer assigned are skipped (their new owner reads the commit)."""
        assigned = self.consumer.assignment()
        for tp, offset in offsets.items():
            if tp in assigned:
                self.consumer.seek(tp, offset)

    def group_metadata(self) -> Any:
        """Generation and member id: lets the broker fence a zombie member's offset commits (KIP-447)."""
        return self.consumer.group_metadata()


class TransactionalSink:
    """A transactional producer: outputs, dead letters and consumed offsets commit or abort together."""

    check_topic = KafkaSink.check_topic  # it only uses self.producer

    def __init__(self, settings: WorkerSettings, bootstrap_timeout_ms: int = 10_000):
        self.transactional_id = settings.transactional_id
        try:
            self.producer = KafkaProducer(
                bootstrap_servers=list(settings.bootstrap_servers),
                client_id=f"lstm-worker-{settings.group_id}",
                transactional_id=settings.transactional_id,
                enable_idempotence=True,
                acks="all",
                max_in_flight_requests_per_connection=5,
                linger_ms=5,
                batch_size=256 * 1024,
                max_request_size=settings.max_dead_letter_bytes + 65536,
                max_block_ms=30_000,
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
                bootstrap_timeout_ms=bootstrap_timeout_ms,
                **settings.security.client_config(),
            )
        except (KafkaError, OSError) as exc:
            raise _connect_error(settings, exc) from None

    def init_transactions(self) -> None:
        """Register the transactional id; the broker aborts a predecessor's open transaction and fences it."""
        try:
            self.producer.init_transactions()
        except UnsupportedVersionError:
            raise StartupError("the broker does not support transactions: run without --exactly-once") from None
        except KafkaError as exc:
            raise StartupError(f"cannot start transactions for --transactional-id {self.transactional_id!r} "
                               f"({type(exc).__name__}: {exc})") from None

    def begin(self) -> None:
        self.producer.begin_transaction()

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> Any:
        return self.producer.send(topic, key=key, value=value, headers=headers)

    def flush(self, timeout_s: float) -> None:
        self.producer.flush(timeout=timeout_s)

    def send_offsets(self, offsets: dict[TopicPartition, int], group_metadata: Any) -> None:
        self.producer.send_offsets_to_transaction(
            {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}, group_metadata)

    def commit(self) -> None:
        self.producer.commit_transaction()

    def abort(self) -> None:
        self.producer.abort_transaction()

    def fencing_error(self, exc: BaseException) -> BaseException | None:
        """The fencing error behind ``exc``, if this producer was fenced; else ``None``.

        After a fatal error kafka-python raises a generic KafkaError from every
        transactional call; the cause is kept on its transaction manager.
        """
        if isinstance(exc, FENCING_ERRORS):
            return exc
        manager = getattr(self.producer, "_transaction_manager", None)
        cause = manager.last_error if manager is not None and manager.has_fatal_error() else None
        return cause if isinstance(cause, FENCING_ERRORS) else None

    def close(self, timeout_s: float) -> None:
        self.producer.close(timeout=timeout_s)
