"""Micro-batching: records polled since the last batch was handed to inference, closed on count, tokens or time.

The same idea as MLServer's adaptive batcher: never wait longer than ``max_wait_s``
after the first record was polled, never exceed ``max_size`` records, and never
exceed ``max_tokens`` tokens, so one batch of long documents cannot blow up
memory or latency. The record that crosses the token budget stays in the batch:
per partition, a batch is an unbroken run of offsets (what a transaction commits).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka.structs import TopicPartition

from worker.pipeline.messages import Entry


@dataclass
class OpenBatch:
    """Entries in poll order (so in offset order per partition)."""

    entries: list[Entry] = field(default_factory=list)
    tokens: int = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.tokens += len(entry.token_ids)

    def closed_by(self, now: float, max_size: int, max_wait_s: float, max_tokens: int) -> str | None:
        """Why the batch is complete (``size``, ``tokens``, ``time``), or ``None`` to keep polling."""
        if not self.entries:
            return None
        if len(self.entries) >= max_size:
            return "size"
        if self.tokens >= max_tokens:
            return "tokens"
        if now - self.entries[0].polled_at >= max_wait_s:
            return "time"
        return None

    def wait_s(self, now: float, max_wait_s: float) -> float:
        """How long until the batch closes on time (0 when it already has, ``max_wait_s`` when empty)."""
        if not self.entries:
            return max_wait_s
        return max(0.0, self.entries[0].polled_at + max_wait_s - now)

    def drop(self, partitions: set[TopicPartition]) -> int:
        """Forget the entries of ``partitions``; returns how many were dropped."""
        kept = [e for e in self.entries if e.ticket.partition not in partitions]
        dropped = len(self.entries) - len(kept)
        self.entries = kept
        self.tokens = sum(len(e.token_ids) for e in kept)
        return dropped
