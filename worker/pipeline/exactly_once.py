"""Exactly once: each batch's labels, dead letters and the offsets after it commit in one Kafka transaction.

A batch is sent as: ``begin`` → send every message → flush → check every send →
``send_offsets`` (with the consumer's group metadata, so a broker can refuse a
zombie member's offsets, KIP-447) → ``commit``. Every wait is bounded by the
flush timeout, a third of ``--transaction-timeout-ms``, so a transaction ends
(committed or aborted) before the broker would time it out, and the loop thread
is back in ``poll`` well within ``--max-poll-interval-ms``.

A failed transaction is aborted and the same batch is sent again after the
backoff; later batches wait
behind it, fetching pauses and ``/readyz`` says why, as for a failed send in
at-least-once mode. Records are answered only when their transaction commits.

A message moves one rung down the ladder only for a *too large* refusal of its
own (:func:`~worker.pipeline.send_failures.own_refusal`): the broker refuses a
whole batch and kafka-python fails the sends queued behind it with the same
error, so when one comes back among others the retried transaction sends the
batch one message at a time, each flushed alone, and the first refused one moves
down before the next retry.

The offsets a transaction commits are one past the batch's last record, or the
consumer's position where nothing was polled after the batch (it passes the
transaction markers of a transactional input, see :mod:`worker.offsets`). A
partition whose position moves on later with nothing in flight (a marker read
after its batch committed) gets a transaction of offsets alone, at most once per
``--commit-interval-ms``, so a drained partition ends at its log end.

A producer that cannot go on is replaced: when an abort gets no answer, or the
broker aborted our transaction for running past its timeout (it bumps the epoch,
which looks like fencing), a new producer with the same transactional id takes
over. Only a real fence, another live process that registered our id, stops the
worker: the work belongs to that process.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import TopicPartition

from worker.exceptions import StartupError
from worker.pipeline.guarantee import Guarantee
from worker.pipeline.messages import Message, smaller
from worker.pipeline.send_failures import FailureKind, backoff_s, classify, own_refusal


class ExactlyOnce(Guarantee):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._pending: deque[list[Message]] = deque()  # batches not yet committed, oldest first
        self._timeout_s = self.settings.flush_timeout_s
        self._next_offsets_commit = 0.0  # when a transaction of offsets alone may run next (monotonic)
        self._offsets_failures = 0
        self._one_at_a_time = False  # the oldest batch had a too-large refusal among others: isolate its sends

    def publish(self, messages: list[Message], now: float) -> None:
        if messages:
            self._pending.append(messages)
        self.service(now)

    def publish_shadow(self, messages: list[Message], now: float) -> None:
        self.publish(messages, now)  # a transaction of its own, after the batches before it, with no offsets

    def service(self, now: float, deadline: float | None = None) -> None:
        # Our partitions may be someone else's after a freeze: no transaction until the group answers again.
        while self._pending and self.fatal is None and self.retry_due(now) and not self.consumer.membership_in_doubt():
            batch = [m for m in self._pending[0] if self.tracker.is_current(m.entry.ticket)]
            if batch and not self._transact(batch, self._offsets_after(batch), now, deadline):
                return
            self._pending.popleft()
            self._one_at_a_time = False
            now = time.monotonic()
            if self.stall is not None:
                self.recovered(now, batches_waiting=len(self._pending))

    def maybe_commit(self, now: float, deadline: float | None = None) -> None:
        """With no batch waiting: commit positions that moved past what the last transactions committed."""
        if self._pending or self.stall is not None or self.fatal is not None or now < self._next_offsets_commit:
            return
        self._next_offsets_commit = now + self.settings.commit_interval_ms / 1000
        offsets = self.tracker.committable(positions=self.consumer.positions(), idle_only=True)
        if not offsets or self.consumer.membership_in_doubt():
            return
        if self._transact([], offsets, now, deadline):
            self._offsets_failures = 0
            return
        self._offsets_failures += 1  # not a stall: nothing waits behind it; tried again after a backoff
        self._next_offsets_commit = time.monotonic() + backoff_s(self._offsets_failures,
                                                                 self.settings.send_retry_backoff_max_s)

    def drain(self, deadline: float) -> None:
        """Commit what waits, while time is left; what is not committed is read again after the restart."""
        if self.stall is not None:
            self.stall.retry_at = time.monotonic()  # one last try, now
        self.service(time.monotonic(), deadline)
        if not self._pending and self.stall is None and time.monotonic() < deadline:
            self._next_offsets_commit = 0.0
            self.maybe_commit(time.monotonic(), deadline)

    # -- one batch, one transaction -----------------------------------------------------------------------
    def _offsets_after(self, batch: list[Message]) -> dict[TopicPartition, int]:
        return self.tracker.past_markers(_offsets_after(batch), self.consumer.positions())

    def _transact(self, batch: list[Message], offsets: dict[TopicPartition, int], now: float,
                  deadline: float | None) -> bool:
        """True when the batch and ``offsets`` are committed; else the transaction is aborted and False.

        A batch that failed is updated in place for its retry; offsets alone are tried again later.
        """
        timeout = self._timeout_s if deadline is None else max(0.1, min(self._timeout_s, deadline - now))
        started = time.monotonic()
        try:
            if self.producer is None:
                self.producer = self.new_producer()
            self.producer.begin()
            sent = self._send_batch(batch, timeout)
            if offsets and self.consumer.membership_in_doubt():
                raise KafkaError("no heartbeat answered for longer than the session timeout: the group may have "
                                 "moved these partitions; the batch waits")
            if offsets:  # none for shadow labels alone: their records' offsets were committed with their batch
                self.producer.send_offsets(offsets, self.consumer.group_metadata(), timeout)
                if self.consumer.membership_in_doubt():  # frozen since the offsets were sent: abort, don't commit
                    raise KafkaError("no heartbeat answered for longer than the session timeout before the commit: "
                                     "the group may have moved these partitions; the batch waits")
            self.producer.commit(timeout)
        except Exception as exc:  # noqa: BLE001 - Kafka and start-up errors are retried; anything else is a bug
            if self._abort(exc, started):
                self._log_aborted(batch, offsets, exc)
            return False
        stored_at = time.time()
        for message, _ in sent:
            self.answered(message, stored_at)
        self.tracker.mark_committed(offsets)
        self.metrics.commits.labels("ok").inc()
        return True

    def _send_batch(self, batch: list[Message], timeout: float) -> list[tuple[Message, Any]]:
        """Send and flush ``batch`` (each message alone when isolating); raise on the first failure found.

        Before raising, the batch waiting for the retry is updated: a message refused as too large on its own
        moves one rung down; a refusal among others makes the retry send one message at a time.
        """
        alone = self._one_at_a_time or len(batch) == 1
        sent: list[tuple[Message, Any]] = []
        for message in batch:
            sent.append(self._send(message))
            if self._one_at_a_time:
                self.producer.flush(timeout)
                self._check(sent, batch, timeout, alone)
        if not self._one_at_a_time:
            self.producer.flush(timeout)
            self._check(sent, batch, timeout, alone)
        return sent

    def _check(self, sent: list[tuple[Message, Any]], batch: list[Message], timeout: float, alone: bool) -> None:
        for i, (message, future) in enumerate(sent):
            if future.succeeded():
                continue
            error = future.exception or KafkaTimeoutError(f"send not acknowledged within {timeout:.1f} s")
            retry = [sent_message for sent_message, _ in sent] + batch[len(sent):]
            if classify(error) is FailureKind.TOO_LARGE:
                if not own_refusal(error, alone=alone and i == len(sent) - 1):
                    self._one_at_a_time = True
                elif not message.smallest:
                    retry[i] = smaller(message, self.settings)
            self._pending[0] = retry
            raise error if isinstance(error, KafkaError) else KafkaError(f"send failed: {error!r}")

    def _send(self, message: Message) -> tuple[Message, Any]:
        """Send in the largest form the producer takes: one it refuses before queueing joins smaller at once."""
        while True:
            try:
                return message, self.producer.send(message.topic, message.key, message.value, message.headers)
            except Exception as exc:
                if classify(exc) is not FailureKind.TOO_LARGE or message.smallest:
                    raise
                self.log.warning("output_too_large" if message.reason is None else "dead_letter_too_large",
                                 source=message.entry.source.as_id(), rung=message.rung, error=str(exc))
                message = smaller(message, self.settings)

    def _abort(self, exc: BaseException, started: float) -> bool:
        """End the failed transaction; False when the worker cannot go on (``fatal`` says why)."""
        self.metrics.commits.labels("aborted").inc()
        if not isinstance(exc, KafkaError | StartupError):
            self.fatal = f"transaction failed: {type(exc).__name__}: {exc}"
            return False
        fence = self.producer.fenced_by(exc) if self.producer is not None else None
        timed_out = time.monotonic() - started >= self.settings.transaction_timeout_ms / 1000
        if fence is not None and not timed_out:
            self.log.error("producer_fenced", transactional_id=self.settings.transactional_id,
                           error=f"{type(fence).__name__}: {fence}",
                           hint="another live worker registered this transactional id and took over; give each "
                                "worker its own --transactional-id (the default is unique per host and slot)")
            self.fatal = f"producer fenced ({type(fence).__name__}: {fence}): another worker started with " \
                         f"transactional id {self.settings.transactional_id!r} and took over"
            return False
        if fence is None and self.producer is not None:
            try:
                self.producer.abort(self._timeout_s)
            except KafkaError as abort_error:
                fence = abort_error
        if fence is not None:  # no answer to the abort, or the broker timed the transaction out: start afresh
            self.discard_producer(fence)  # the next try starts a new one, aborting what is open
        return True

    def _log_aborted(self, batch: list[Message], offsets: dict[TopicPartition, int], exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if not batch:  # offsets alone: nothing waits behind them
            self.log.warning("transaction_aborted", error=error, records=0,
                             offsets={f"{tp.topic}[{tp.partition}]": o for tp, o in offsets.items()})
            return
        first = batch[0].entry.ticket
        self.log.warning("transaction_aborted", error=error, records=len(batch),
                         partition=first.partition.partition, first_offset=first.offset)
        self.schedule_retry(batch[0].topic, exc, time.monotonic(), partition=first.partition.partition,
                            offset=first.offset, batches_waiting=len(self._pending))


def _offsets_after(batch: list[Message]) -> dict[TopicPartition, int]:
    """Per partition, one past the batch's last record: what the transaction commits for the group."""
    offsets: dict[TopicPartition, int] = {}
    for message in batch:
        if message.shadow:
            continue
        ticket = message.entry.ticket
        offsets[ticket.partition] = max(offsets.get(ticket.partition, 0), ticket.offset + 1)
    return offsets
