"""The delivery guarantee: the one part of the pipeline that differs between the two modes.

The loop (:mod:`worker.pipeline.loop`) hands every batch's messages, in input
order, to a :class:`Guarantee`; the guarantee gets them to the broker and moves
the group's offsets only past records whose results are stored:

- :class:`~worker.pipeline.at_least_once.AtLeastOnce` sends asynchronously and
  commits offsets that every earlier label and dead letter was acknowledged for;
- :class:`~worker.pipeline.exactly_once.ExactlyOnce` sends each batch in one
  transaction together with the offsets after it.

Both retry a failing send (or transaction) with the same backoff (:class:`Stall`),
report it on ``/readyz`` while it lasts, shrink a message that is too large along
the same ladder (:mod:`worker.pipeline.messages`) and count results the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from worker import codec
from worker.drift import DriftMonitor
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.pipeline.messages import Message
from worker.pipeline.ports import Consumer, Producer
from worker.pipeline.send_failures import advice, backoff_s
from worker.settings import WorkerSettings

# A reachable broker answers within milliseconds and kafka-python retries a request on its own for much
# longer: no acknowledgement of a send, or no successful commit, for this long means the brokers are
# unreachable or stuck, which /readyz reports (and fetching pauses) while the clients keep trying.
OVERDUE_S = 10.0


@dataclass
class Stall:
    """Sends (or transactions) to ``topic`` keep failing; the next try is due at ``retry_at`` (monotonic)."""

    topic: str
    error: str
    fix: str
    attempt: int
    retry_at: float
    since: float


class Guarantee:
    """What both strategies share: the retry schedule, the accounting of stored results, the fatal flag."""

    def __init__(self, settings: WorkerSettings, producer: Producer, consumer: Consumer, tracker: OffsetTracker,
                 metrics: WorkerMetrics, log: Any, *, new_producer: Callable[[], Producer]):
        self.settings, self.producer, self.consumer, self.tracker = settings, producer, consumer, tracker
        # A started replacement for a producer that cannot go on (with --exactly-once: init_transactions done).
        self.new_producer = new_producer
        self.metrics, self.log = metrics, log
        self.fatal: str | None = None  # set when only a restart helps; the loop then stops and exits 1
        self.stall: Stall | None = None
        self._commits_failing: tuple[float, str] | None = None  # (since, error) while consumer commits fail
        self.drift = DriftMonitor(metrics, settings.drift_window, settings.min_confidence, log)  # the loop serves it

    # -- what the loop calls ---------------------------------------------------------------------------
    def publish(self, messages: list[Message], now: float) -> None:
        raise NotImplementedError

    def publish_shadow(self, messages: list[Message], now: float) -> None:
        """A shadow model's labels: sent after what came before, never retried, never committed for."""
        raise NotImplementedError

    def service(self, now: float) -> None:
        """Do what is due: handle acknowledgements and failures, retry after the backoff."""
        raise NotImplementedError

    def maybe_commit(self, now: float) -> None:
        """Commit the consumer's offsets if this strategy does so and it is time."""

    def offsets_to_commit(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """What the consumer may commit for partitions being revoked (never waits for sends)."""
        return {}

    def drain(self, deadline: float) -> None:
        """At shutdown: store what can be stored before ``deadline`` (monotonic), then commit."""
        raise NotImplementedError

    def problem(self) -> str | None:
        """Why results are not getting out, for /readyz and the pause decision; None while they flow."""
        stall = self.stall
        if stall is not None:
            return f"sends to {stall.topic!r} fail ({stall.error}), retry {stall.attempt} in progress: {stall.fix}"
        refused = self.consumer.refused()
        if refused is not None:
            return (f"the broker refuses this worker {refused}: grant it (docs/security.md); nothing is read or "
                    "committed until then")
        if self.consumer.membership_in_doubt():  # an idle exactly-once worker sends and commits nothing to fail
            return ("no heartbeat answered for a session timeout: the group coordinator is unreachable (or this "
                    "process was frozen); commits are held until the group answers")
        failing = self._commits_failing
        if failing is not None and time.monotonic() - failing[0] >= OVERDUE_S:
            return (f"offset commits fail for {time.monotonic() - failing[0]:.0f} s ({failing[1]}): check that the "
                    "brokers are reachable")
        return None

    # -- shared rules ----------------------------------------------------------------------------------
    def answered(self, message: Message, stored_at: float) -> None:
        """``message``'s record is durably answered (``stored_at``: wall-clock seconds): count it."""
        if message.shadow or not self.tracker.ack(message.entry.ticket):
            return  # its partition was revoked meanwhile: the next owner answers it again
        reason = message.reason
        if reason is not None:
            self.metrics.dead_letters.labels(reason).inc()
            return
        self.metrics.records_out.inc()
        self.metrics.labels.labels(message.outcome.label).inc()
        self.metrics.confidence.observe(message.outcome.score)
        self.drift.observe(message.model, message.outcome.label, codec.rounded_score(message.outcome))
        if message.topic == self.settings.review_topic:
            self.metrics.routed_to_review.inc()
        timestamp_ms = message.entry.record.timestamp_ms
        if timestamp_ms > 0:
            self.metrics.end_to_end_seconds.observe(max(0.0, stored_at - timestamp_ms / 1000))

    def schedule_retry(self, topic: str, exc: BaseException, now: float, **context: Any) -> None:
        """One more failed try: the next one waits twice as long (capped), logged with what to fix."""
        attempt = self.stall.attempt + 1 if self.stall is not None else 1
        delay = backoff_s(attempt, self.settings.send_retry_backoff_max_s)
        since = self.stall.since if self.stall is not None else now
        error = f"{type(exc).__name__}: {exc}"
        self.stall = Stall(topic, error, advice(topic, exc, self.settings.transactional_id), attempt, now + delay,
                           since)
        self.metrics.send_stalled.set(1)
        self.log.error("send_retry", topic=topic, attempt=attempt, retry_in_s=round(delay, 3), error=error,
                       fix=self.stall.fix, **context)

    def retry_due(self, now: float) -> bool:
        return self.stall is None or now >= self.stall.retry_at

    def recovered(self, now: float, **context: Any) -> None:
        stall, self.stall = self.stall, None
        if stall is None:
            return
        self.metrics.send_stalled.set(0)
        self.log.info("send_recovered", topic=stall.topic, attempts=stall.attempt,
                      stalled_s=round(now - stall.since, 3), **context)

    def discard_producer(self, cause: BaseException) -> None:
        """Close a producer that cannot go on; the caller starts a replacement (``new_producer``)."""
        self.log.warning("producer_replaced", reason=f"{type(cause).__name__}: {cause}",
                         transactional_id=self.settings.transactional_id or None)
        producer, self.producer = self.producer, None
        try:
            producer.close(1.0)
        except Exception as exc:  # noqa: BLE001 - it is being discarded; its state no longer matters
            self.log.warning("producer_close_failed", error=f"{type(exc).__name__}: {exc}")

    def commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit through the consumer (at-least-once); a failure is logged and retried at the next commit."""
        if not offsets:  # nothing waits to be committed: a past failure no longer holds anything back
            self._commits_failing = None
            return
        if self.consumer.membership_in_doubt():  # our partitions may be someone else's now: commit nothing yet
            self.log.warning("commit_held", reason="no heartbeat answered for longer than the session timeout")
            return
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:  # CommitFailed, a timeout: the next owner re-reads, never skips
            self.metrics.commits.labels("failed").inc()
            error = f"{type(exc).__name__}: {exc}"
            self.log.warning("commit_failed", error=error)
            self._commits_failing = (self._commits_failing or (time.monotonic(), error))[0], error
            return
        self._commits_failing = None
        self.tracker.mark_committed(offsets)
        self.metrics.commits.labels("ok").inc()
