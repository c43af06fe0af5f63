"""The consumer lag gauge: log end minus the group's committed offset per assigned partition, from the broker.

Asked on the loop thread (kafka-python's consumer is not thread-safe) every ``LAG_REFRESH_S``; it keeps moving
while fetching is paused, so the lag alerts see a stuck worker. When the broker does not answer, it is asked
again only after ``LAG_RETRY_S``: the loop must not spend its time waiting for a metric.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from worker.metrics import WorkerMetrics
from worker.pipeline.ports import Consumer

LAG_REFRESH_S = 5.0
LAG_RETRY_S = 30.0


class LagGauge:
    def __init__(self, consumer: Consumer, metrics: WorkerMetrics, log: Any):
        self.consumer, self.metrics, self.log = consumer, metrics, log
        self._due = 0.0

    def maybe_report(self, now: float, owned: set[TopicPartition]) -> None:
        if now < self._due:
            return
        try:
            lags = self.consumer.lag()
        except KafkaError as exc:
            self._due = now + LAG_RETRY_S
            self.log.debug("lag_unknown", error=f"{type(exc).__name__}: {exc}")
            return
        self._due = now + LAG_REFRESH_S
        for tp, lag in lags.items():
            if tp in owned:  # a partition revoked meanwhile keeps no series
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions that are no longer ours: their series go (the new owner reports them)."""
        for tp in partitions:
            try:
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass  # no lag was reported for it yet
