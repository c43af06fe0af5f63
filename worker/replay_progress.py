"""How far a replay job is: records done (answered and committed), left, rate and time to go.

On a terminal one status line is rewritten in place; otherwise a ``replay_progress`` log line every
``LOG_EVERY_S``. The counts come from the job's committed offsets, so they hold across restarts.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from kafka.structs import TopicPartition

TERMINAL_EVERY_S = 0.5
LOG_EVERY_S = 5.0


class ReplayProgress:
    def __init__(self, job: str, log: Any, stream: TextIO | None = None):
        self.job, self.log = job, log
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self._bounds: dict[TopicPartition, Any] = {}
        self._began = time.monotonic()
        self._done_at_start = 0
        self._last = 0.0

    def begin(self, bounds: dict[TopicPartition, Any], committed: dict[TopicPartition, int]) -> None:
        self._bounds, self._began = bounds, time.monotonic()
        self._done_at_start = self.counts(committed)["done"]
        self.log.info("replay_started", job=self.job, **self.counts(committed),
                      partitions={f"{tp.topic}[{tp.partition}]": [b.start, b.end] for tp, b in sorted(bounds.items())})

    def counts(self, committed: dict[TopicPartition, int]) -> dict[str, Any]:
        total = sum(b.end - b.start for b in self._bounds.values())
        done = sum(min(max(committed.get(tp, b.start), b.start), b.end) - b.start for tp, b in self._bounds.items())
        elapsed = max(time.monotonic() - self._began, 1e-9)
        rate = (done - self._done_at_start) / elapsed
        left = total - done
        return dict(total=total, done=done, left=left, rate_per_s=round(rate, 1),
                    eta_s=round(left / rate, 1) if rate > 0 else None)

    def maybe_report(self, committed: dict[TopicPartition, int]) -> None:
        now = time.monotonic()
        if now - self._last < (TERMINAL_EVERY_S if self.terminal else LOG_EVERY_S):
            return
        self._last = now
        counts = self.counts(committed)
        if self.terminal:
            self.stream.write("\r" + self.line(counts) + "\033[K")
            self.stream.flush()
        else:
            self.log.info("replay_progress", job=self.job, **counts)

    def line(self, counts: dict[str, Any]) -> str:
        to_go = f"{counts['eta_s']:.0f} s to go" if counts["eta_s"] is not None else "time to go unknown"
        return (f"replay {self.job}: {counts['done']:,} of {counts['total']:,} labelled, {counts['left']:,} left, "
                f"{counts['rate_per_s']:,.0f}/s, {to_go}")

    def finish(self, committed: dict[TopicPartition, int], complete: bool, exit_code: int) -> None:
        """The summary: one line on a terminal, and always the ``replay_finished`` log event."""
        counts = self.counts(committed)
        seconds = round(time.monotonic() - self._began, 1)
        if self.terminal:
            self.stream.write("\r" + self.line(counts) + "\033[K\n")
        self.log.info("replay_finished", job=self.job, complete=complete, exit_code=exit_code, seconds=seconds,
                      labelled_this_run=counts["done"] - self._done_at_start, **counts)
