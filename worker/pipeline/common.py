"""Small pieces both consume loops (at-least-once and exactly-once) share."""

from __future__ import annotations

from collections.abc import Callable

from kafka.structs import TopicPartition

from worker.metrics import WorkerMetrics
from worker.pipeline.ports import Source

LAG_REFRESH_S = 5.0


class NullLog:
    """Stands in for a structlog logger when a test passes none."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def partition_names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]


def partition_offsets(offsets: dict[TopicPartition, int] | None) -> dict[str, int]:
    return {f"{tp.topic}[{tp.partition}]": o for tp, o in (offsets or {}).items()}


class LagReporter:
    """Copies the consumer's lag into the gauge every few seconds (from the last fetch: no extra round trip)."""

    def __init__(self, source: Source, metrics: WorkerMetrics, clock: Callable[[], float]):
        self.source, self.metrics, self.clock = source, metrics, clock
        self._last = 0.0

    def maybe_update(self) -> None:
        now = self.clock()
        if now - self._last < LAG_REFRESH_S:
            return
        self._last = now
        for tp, lag in self.source.lag().items():
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
