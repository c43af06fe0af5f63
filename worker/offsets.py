"""Per-partition offset bookkeeping: which polled records are answered, and which partitions are ours.

Every polled record is *registered* (in offset order) before it is processed
and *acknowledged* once its label or dead letter is durably stored: when the
broker acknowledged it (at-least-once), or when its transaction committed
(exactly-once). The committable offset of a partition is the lowest offset not
yet acknowledged (or one past the highest registered, when all are), so a
commit never passes a record whose result is not safely stored, whatever order
the acks arrive in; it is also where to read again after a rewind.

A partition with nothing in flight commits the consumer's *position* instead,
when that is further: the position passes what the broker never delivers
(transaction commit and abort markers, records of aborted transactions), and
it passes a record only once ``poll`` returned it, so every record below it was
registered here and, with nothing in flight, answered. On a topic written by
transactional producers, "one past the last record" stays one short of the log
end per marker: a drained partition would show a lag of 1 for ever.

Partitions are tracked from assignment to revocation only. On revocation a
partition's state is dropped and its *epoch* bumped: acks that arrive later for
records of the old assignment are ignored, and records polled for a partition
that is not assigned are refused, so nothing is ever committed on behalf of
records that were dropped.

Acks come back on the producer's I/O thread, but the at-least-once strategy queues
them and applies them on the pipeline's thread (``worker/pipeline/at_least_once.py``),
where registrations and commits happen too. The methods still take one lock, so a
reader on another thread sees whole states.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from kafka.structs import TopicPartition


@dataclass
class _PartitionState:
    epoch: int
    pending: OrderedDict[int, bool] = field(default_factory=OrderedDict)  # offset -> acknowledged
    next_offset: int | None = None  # one past the highest registered offset
    committed: int | None = None


@dataclass(frozen=True)
class Ticket:
    """What a record carries through the pipeline to acknowledge itself later."""

    partition: TopicPartition
    offset: int
    epoch: int


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[TopicPartition, _PartitionState] = {}
        self._epochs: dict[TopicPartition, int] = {}
        self._in_flight = 0

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Start tracking assigned partitions afresh; only owned partitions accept records.

        A partition assigned again without a revocation in between (a client that skipped the callback) starts
        over as if revoked: the consumer reads it again from the group's offset, and the old state's records
        are dropped rather than registered out of order.
        """
        with self._lock:
            for tp in partitions:
                old = self._states.pop(tp, None)
                epoch = self._epochs.get(tp, 0)
                if old is not None:
                    epoch = old.epoch + 1
                    self._in_flight -= sum(1 for done in old.pending.values() if not done)
                self._epochs[tp] = epoch
                self._states[tp] = _PartitionState(epoch)

    def register(self, tp: TopicPartition, offset: int) -> Ticket | None:
        """A ticket for a polled record, or ``None`` if its partition is not (or no longer) ours.

        kafka-python can still hand out records of a revoked partition until the
        rebalance completes; tracking them would let their offsets be committed
        later on behalf of records that were dropped, so they are refused.
        """
        with self._lock:
            state = self._states.get(tp)
            if state is None:
                return None
            if state.next_offset is not None and offset < state.next_offset:
                raise ValueError(f"{tp} offset {offset} registered out of order (next is {state.next_offset})")
            state.pending[offset] = False
            state.next_offset = offset + 1
            self._in_flight += 1
            return Ticket(tp, offset, state.epoch)

    def is_current(self, ticket: Ticket) -> bool:
        """False once the partition was revoked after the ticket was issued."""
        with self._lock:
            state = self._states.get(ticket.partition)
            return state is not None and state.epoch == ticket.epoch

    def ack(self, ticket: Ticket) -> bool:
        """Mark a record done; returns False if its partition was revoked meanwhile (ignored)."""
        with self._lock:
            state = self._states.get(ticket.partition)
            if state is None or state.epoch != ticket.epoch or ticket.offset not in state.pending:
                return False
            state.pending[ticket.offset] = True
            self._in_flight -= 1
            while state.pending:
                offset, done = next(iter(state.pending.items()))
                if not done:
                    break
                state.pending.popitem(last=False)
            return True

    @staticmethod
    def _safe_offset(state: _PartitionState, position: int | None = None) -> int | None:
        if state.pending:
            return next(iter(state.pending))
        if position is None or (state.next_offset is not None and position < state.next_offset):
            return state.next_offset
        return position  # nothing in flight: past the markers (and aborted records) the consumer skipped

    def resume_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Where to read again after losing these partitions: the lowest unacknowledged offset.

        Everything before it is durably answered; everything from it on may have
        been dropped, so a consumer that keeps these partitions must rewind here.
        """
        with self._lock:
            result = {}
            for tp in partitions:
                state = self._states.get(tp)
                safe = self._safe_offset(state) if state is not None else None
                if safe is not None:
                    result[tp] = safe
            return result

    def committable(self, partitions: list[TopicPartition] | None = None,
                    positions: dict[TopicPartition, int] | None = None, *,
                    idle_only: bool = False) -> dict[TopicPartition, int]:
        """Offsets that are safe to commit and newer than the last commit.

        ``positions``: the consumer's position per partition, read on the thread that polls, after the last
        poll's records were registered; a partition with nothing in flight commits it. ``idle_only``: only
        partitions with nothing in flight (the others commit with their next batch).
        """
        positions = positions or {}
        with self._lock:
            result = {}
            for tp, state in self._states.items():
                if partitions is not None and tp not in partitions or idle_only and state.pending:
                    continue
                safe = self._safe_offset(state, positions.get(tp))
                if safe is not None and (state.committed is None or safe > state.committed):
                    result[tp] = safe
            return result

    def past_markers(self, offsets: dict[TopicPartition, int],
                     positions: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """``offsets`` (one past a batch's last record, per partition), moved up to the consumer's position
        where nothing was registered after the batch: what its transaction may commit (see the module doc)."""
        with self._lock:
            result = dict(offsets)
            for tp, offset in offsets.items():
                state, position = self._states.get(tp), positions.get(tp)
                if state is not None and position is not None and state.next_offset == offset < position:
                    result[tp] = position
            return result

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        with self._lock:
            for tp, offset in offsets.items():
                state = self._states.get(tp)
                if state is not None:
                    state.committed = max(offset, state.committed or 0)

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Forget revoked partitions; later acks of their records are ignored."""
        with self._lock:
            for tp in partitions:
                state = self._states.pop(tp, None)
                self._epochs[tp] = (state.epoch if state else self._epochs.get(tp, 0)) + 1
                if state is not None:
                    self._in_flight -= sum(1 for done in state.pending.values() if not done)

    def pending_count(self) -> int:
        with self._lock:
            return self._in_flight
