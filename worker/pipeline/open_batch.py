"""The batch of the exactly-once loop: records polled since the last transaction, and the offsets that bound it.

Pure bookkeeping, no I/O: :mod:`worker.pipeline.transactional` commits
:meth:`OpenBatch.next_offsets` with the batch's results and rewinds to
:meth:`OpenBatch.first_offsets` when the transaction aborts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka.structs import TopicPartition

from worker import codec
from worker.kafka_io import InputRecord


@dataclass(frozen=True)
class Entry:
    record: InputRecord
    source: codec.SourceRef
    decoded: codec.Decoded | codec.Rejection
    token_ids: list[int]


@dataclass
class OpenBatch:
    """Records polled since the last transaction, in poll order (so in offset order per partition)."""

    entries: list[Entry] = field(default_factory=list)
    tokens: int = 0
    opened_at: float = 0.0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Entry, now: float) -> None:
        if not self.entries:
            self.opened_at = now
        self.entries.append(entry)
        self.tokens += len(entry.token_ids)

    def closed_by(self, now: float, max_size: int, max_wait_s: float, max_tokens: int) -> str | None:
        """Why the batch is complete (``size``, ``tokens``, ``time``), or ``None`` to keep polling.

        Unlike the at-least-once batcher, the record that crosses the token budget stays in
        the batch: per partition, a transaction covers an unbroken run of offsets.
        """
        if not self.entries:
            return None
        if len(self.entries) >= max_size:
            return "size"
        if self.tokens >= max_tokens:
            return "tokens"
        if now - self.opened_at >= max_wait_s:
            return "time"
        return None

    def first_offsets(self, partitions: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Per partition, the batch's first offset: where to rewind when the batch is not committed."""
        first: dict[TopicPartition, int] = {}
        for entry in self.entries:
            tp = entry.record.tp
            if (partitions is None or tp in partitions) and tp not in first:
                first[tp] = entry.record.offset
        return first

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, one past the batch's last offset: what the transaction commits."""
        return {entry.record.tp: entry.record.offset + 1 for entry in self.entries}

    def drop(self, partitions: set[TopicPartition]) -> int:
        """Forget the records of ``partitions``; returns how many were dropped."""
        kept = [e for e in self.entries if e.record.tp not in partitions]
        dropped = len(self.entries) - len(kept)
        self.entries = kept
        self.tokens = sum(len(e.token_ids) for e in kept)
        return dropped
