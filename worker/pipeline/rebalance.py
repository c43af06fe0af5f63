"""What the worker loop does around a consumer-group rebalance (kafka_io.RebalanceHooks).

These hooks run on kafka-python's I/O thread, see ``kafka_io._Listener`` for
the order of calls. Revoked or lost partitions are forgotten: their later acks
are ignored and records still queued for them are skipped, so nothing is ever
committed on behalf of the partition's next owner.
"""

from __future__ import annotations

from typing import Any

from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from worker.health import HealthState
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.pipeline.common import partition_names, partition_offsets
from worker.settings import WorkerSettings


class RebalanceHandling:
    """Mixed into WorkerLoop; uses its settings, source, sink, tracker, metrics, health and log."""

    settings: WorkerSettings
    source: Any
    sink: Any
    tracker: OffsetTracker
    metrics: WorkerMetrics
    health: HealthState
    log: Any
    _rebalancing: bool  # between a revocation and the next assignment
    _resume_all: bool  # the consumer thread resumes every partition on its next iteration

    def prepare_revoke(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Push buffered sends out so their acks count, then say what is safe to commit."""
        try:
            # Bounded: heartbeats wait while this runs; unacknowledged records are simply re-read by the next owner.
            self.sink.flush(min(5.0, self.settings.session_timeout_ms / 3000))
        except KafkaError as exc:
            self.log.warning("flush_on_revoke_failed", error=str(exc))
        return self.tracker.committable(partitions)

    def resume_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return self.tracker.resume_offsets(partitions)

    def finish_revoke(self, partitions: list[TopicPartition], committed: dict[TopicPartition, int] | None,
                      error: Exception | None) -> None:
        if committed:
            self.tracker.mark_committed(committed)
            self.metrics.commits.labels("ok").inc()
        if error is not None:
            self.metrics.commits.labels("failed").inc()
            self.log.warning("commit_on_revoke_failed", error=f"{type(error).__name__}: {error}")
        self._forget(partitions)
        self._rebalancing = True
        if partitions:
            self.log.info("partitions_revoked", partitions=partition_names(partitions),
                          committed=partition_offsets(committed))

    def lost(self, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        self._rebalancing = True
        self.log.warning("partitions_lost", partitions=partition_names(partitions))

    def assigned(self, partitions: list[TopicPartition]) -> None:
        self.tracker.assign(partitions)
        self._rebalancing = False
        # kafka-python keeps the paused flag of retained partitions: the consumer thread resumes them all
        # on its next iteration, then backpressure is re-evaluated from scratch.
        self._resume_all = True
        assigned = len(self.source.assignment())
        self.health.assigned = assigned
        self.metrics.assigned_partitions.set(assigned)
        self.log.info("partitions_assigned", partitions=partition_names(partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        """Drop in-flight state; later acks of these records are ignored, queued ones are skipped."""
        self.tracker.revoke(partitions)
        for tp in partitions:
            try:
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass  # no lag was reported for it yet
        self.health.assigned = max(0, self.health.assigned - len(partitions))
