"""The consumer of ``lstm-worker replay``: a bounded slice of a topic, read by assignment, with its own checkpoint.

It is a :class:`worker.kafka_io.KafkaSource` that never joins a group: it assigns itself every partition,
seeks each to the slice's start and reads up to the end offset recorded when the job first started (with
``read_committed``, the last stable offset; transaction markers may sit just before it, so a partition is done
when its position reaches the end, not when a record at ``end - 1`` arrived). Records at or past the end are
never handed to the pipeline and their partition is paused. Once the pipeline has committed every partition up
to its end (its usual batching and commits), the source asks it to stop, and it exits as after a drain.

The checkpoint is the job's committed offsets under its own group id (``lstm-worker-replay-<job>``), committed
by assignment (no group membership), each with the slice's start and recorded end in the commit's metadata, so a
restart goes on where the last commit left off and stops at the same end. The live group is never touched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from worker.exceptions import StartupError
from worker.kafka_io import KafkaSource
from worker.pipeline.ports import InputRecord, RebalanceHooks
from worker.replay_progress import ReplayProgress
from worker.settings import WorkerSettings

_REQUEST_TIMEOUT_MS = 10_000
# Longest look for the records of a partition's last batch past what ListOffsets answered (see _log_ends).
_END_PROBE_S = 5.0


def replay_group_id(job: str) -> str:
    """The group id under which a replay job commits its checkpoint (never joined: offsets only)."""
    return f"lstm-worker-replay-{job}"


@dataclass(frozen=True)
class ReplaySlice:
    """Where the slice starts: the earliest offsets (both None), a timestamp, or per-partition offsets."""

    from_time_ms: int | None = None
    from_offsets: tuple[tuple[int, int], ...] | None = None  # (partition, offset); other partitions are skipped


@dataclass
class PartitionSlice:
    start: int
    end: int  # recorded when the job first started: the partition is done when its position reaches it


class ReplaySource(KafkaSource):
    def __init__(self, settings: WorkerSettings, replay: ReplaySlice, progress: ReplayProgress):
        super().__init__(settings)
        self._slice, self._progress = replay, progress
        self.partitions: dict[TopicPartition, PartitionSlice] = {}
        self.committed: dict[TopicPartition, int] = {}
        self._finished: set[TopicPartition] = set()
        self._request_stop: Callable[[], None] | None = None
        self.resumed_from_checkpoint = False

    # -- start: the slice, or the checkpoint ------------------------------------------------------------------
    def check_topic(self) -> int:
        """The topic's partitions, assigned and placed at the checkpoint or the slice's start (errors: exit 2)."""
        count = super().check_topic()
        partitions = [TopicPartition(self.topic, p) for p in sorted(self.consumer.partitions_for_topic(self.topic))]
        self.consumer.assign(partitions)
        try:
            checkpoint = self._checkpoint(partitions)
            fresh = self._slice_bounds([tp for tp in partitions if checkpoint.get(tp, (0, None))[1] is None])
            self.resumed_from_checkpoint = bool(checkpoint)
            for tp in partitions:
                position, bounds = checkpoint.get(tp, (None, None))
                self.partitions[tp] = bounds or fresh[tp]
                position = self.partitions[tp].start if position is None else position
                self.consumer.seek(tp, position)
                self.committed[tp] = position
            # Record the ends at once: a job stopped before its first commit still ends where it would have.
            self.commit(dict(self.committed))
        except KafkaError as exc:
            self.consumer.close(autocommit=False, timeout_ms=1000)
            raise StartupError(f"cannot place the replay on {self.topic!r}: {type(exc).__name__}: {exc}") from None
        return count

    def subscribe(self, hooks: RebalanceHooks) -> None:
        """No group to join: the partitions placed by :meth:`check_topic` are handed to the pipeline."""
        self._request_stop = hooks.request_stop
        hooks.assigned(sorted(self.partitions))
        self._progress.begin(self.partitions, self.committed)
        self._finish_reached()

    def _checkpoint(self, partitions: list[TopicPartition]) -> dict[TopicPartition, tuple[int, PartitionSlice | None]]:
        """Committed offset and slice bounds per partition; bounds None where the broker kept no metadata (Tansu)."""
        found: dict[TopicPartition, tuple[int, PartitionSlice | None]] = {}
        for tp in partitions:
            committed = self.consumer.committed(tp, metadata=True, timeout_ms=_REQUEST_TIMEOUT_MS)
            if committed is None or committed.offset < 0:
                continue
            if not committed.metadata:  # the offset is still the checkpoint; the end is recorded again
                found[tp] = committed.offset, None
                continue
            try:
                bounds = json.loads(committed.metadata)
                found[tp] = committed.offset, PartitionSlice(int(bounds["start"]), int(bounds["end"]))
            except (ValueError, TypeError, KeyError):
                self.consumer.close(autocommit=False, timeout_ms=1000)
                raise StartupError(f"the checkpoint of group {self._settings.group_id!r} on {tp.topic}[{tp.partition}]"
                                   " was not written by lstm-worker replay: choose another --job") from None
        return found

    def _slice_bounds(self, partitions: list[TopicPartition]) -> dict[TopicPartition, PartitionSlice]:
        if not partitions:
            return {}
        beginnings = self.consumer.beginning_offsets(partitions, timeout_ms=_REQUEST_TIMEOUT_MS)
        ends = self._log_ends(partitions)
        if self._slice.from_time_ms is not None:
            found = self.consumer.offsets_for_times({tp: self._slice.from_time_ms for tp in partitions},
                                                    timeout_ms=_REQUEST_TIMEOUT_MS)
            starts = {tp: found[tp].offset if found.get(tp) is not None else ends[tp] for tp in partitions}
        elif self._slice.from_offsets is not None:
            chosen = dict(self._slice.from_offsets)
            unknown = sorted(set(chosen) - {tp.partition for tp in partitions})
            if unknown:
                raise StartupError(f"--from-offsets names partitions {unknown} that topic {self.topic!r} does not "
                                   f"have (it has {len(partitions)})")
            starts = {tp: chosen.get(tp.partition, ends[tp]) for tp in partitions}
        else:
            starts = beginnings
        # A start before the log's beginning (deleted by retention) reads from the beginning; past the end, nothing.
        return {tp: PartitionSlice(min(max(starts[tp], beginnings[tp]), ends[tp]), ends[tp]) for tp in partitions}

    def _log_ends(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's end now: ListOffsets, raised to what a fetch from there finds (last record, watermark).

        Apache Kafka answers ListOffsets exactly (read_committed: the last stable offset), and the fetch adds
        nothing unless a transaction is open (its high watermark is past the last stable offset: the partition is
        then done once that transaction ended); Tansu answers the last record batch's first offset + 1, and the
        fetch's high watermark says where the log ends. The records fetched here are only looked at: the caller
        seeks every partition afterwards.
        """
        ends = self.consumer.end_offsets(partitions, timeout_ms=_REQUEST_TIMEOUT_MS)
        probing = {tp for tp in partitions if ends[tp] > 0}
        for tp in probing:
            self.consumer.seek(tp, ends[tp] - 1)
        deadline = time.monotonic() + _END_PROBE_S
        while probing and time.monotonic() < deadline:
            for tp, records in self.consumer.poll(timeout_ms=100).items():
                ends[tp] = max(ends[tp], records[-1].offset + 1, self.consumer.highwater(tp) or 0)
            # Done once the fetch position passed what ListOffsets named (records, or markers skipped).
            probing = {tp for tp in probing if (self.consumer.position(tp, timeout_ms=0) or 0) < ends[tp]}
        return ends

    # -- reading up to the end ------------------------------------------------------------------------------
    def poll(self, timeout_ms: int, max_records: int) -> list[InputRecord]:
        records = super().poll(timeout_ms, max_records)
        kept = [r for r in records if r.offset < self.partitions[r.tp].end]
        self._finish_reached()
        self._progress.maybe_report(self.committed)
        return kept

    def _finish_reached(self) -> None:
        positions = self.positions()
        reached = {tp for tp, bounds in self.partitions.items() if positions.get(tp, -1) >= bounds.end}
        newly = reached - self._finished
        if newly:
            self.consumer.pause(*newly)  # what the topic gained since the job started is not its business
            self._finished |= newly
        if self.complete and self._request_stop is not None:
            self._request_stop()  # every record answered and committed: the pipeline's drain finds nothing left
            self._request_stop = None

    def resume(self) -> None:
        self.consumer.resume(*(set(self.consumer.paused()) - self._finished))

    @property
    def complete(self) -> bool:
        """Every record of the slice answered and committed."""
        return all(self.committed.get(tp, -1) >= bounds.end for tp, bounds in self.partitions.items())

    # -- the checkpoint --------------------------------------------------------------------------------------
    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.consumer.commit({tp: OffsetAndMetadata(offset, self._bounds_metadata(tp), -1)
                              for tp, offset in offsets.items()}, timeout_ms=5000)
        self.committed.update(offsets)

    def _bounds_metadata(self, tp: TopicPartition) -> str:
        bounds = self.partitions[tp]
        return json.dumps({"start": bounds.start, "end": bounds.end})

    def membership_in_doubt(self) -> bool:
        return False  # no group membership: assigned partitions cannot move to another member

    def lag(self) -> dict[TopicPartition, int]:
        """What is left of the slice per partition (not of the topic: records past the end are not replayed)."""
        return {tp: max(0, bounds.end - self.committed.get(tp, bounds.start))
                for tp, bounds in self.partitions.items()}


def open_replay_source(replay: ReplaySlice, progress: ReplayProgress) -> Callable[[WorkerSettings], ReplaySource]:
    def open_source(settings: WorkerSettings) -> ReplaySource:
        try:
            return ReplaySource(settings, replay, progress)
        except KafkaError as exc:
            raise StartupError(f"cannot start the replay: {type(exc).__name__}: {exc}") from None
    return open_source
