"""A worker frozen (SIGSTOP) past its session timeout, then resumed (SIGCONT) after another took over.

While it is frozen the group moves its partitions to the other worker. Once resumed it must not commit
for partitions it no longer owns: a sampler reads the group's committed offsets all along and each
sample must never move backwards, nor pass an input that had no label or dead letter at that moment
(results are dated by their record timestamp, which the worker's producer sets when it sends them).
Nothing is lost, and the resumed worker notices (it logs partitions_lost, or is assigned partitions
again after re-joining).
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.data import json_records
from tests.support.kafka import committed_offsets, create_stream, produce, read_all, reconcile
from tests.support.workers import SESSION_TIMEOUT_MS, frozen, in_background, replica_flags

PARTITIONS = 4


class CommitSampler:
    """Reads the group's committed offsets every ``every_s`` on its own thread: (wall time, offsets)."""

    def __init__(self, bootstrap: str, group: str, topic: str, every_s: float = 0.3):
        self.samples: list[tuple[float, dict[int, int]]] = []
        self._stop = threading.Event()
        self._args = (bootstrap, group, topic, PARTITIONS)
        self._every_s = every_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            offsets = committed_offsets(*self._args)
            self.samples.append((time.time(), offsets))  # read after the commits it shows were made
            self._stop.wait(self._every_s)

    def __enter__(self) -> CommitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.kafka_only("Tansu does not fence a zombie's transactional offsets (KIP-447): with --exactly-once a "
                        "transaction open across the freeze can land over the new owner's commits")
def test_a_frozen_worker_resumed_after_a_takeover_commits_nothing_it_no_longer_owns(broker, real_texts, workers,
                                                                                   mode, unique_name, request) -> None:
    # Found at the end of stop 29 (docs/results.md, Known limits): on Apache Kafka 4.4 the resumed zombie's
    # offsets can land (382 -> 74) although the group moved on: every exactly-once run, some at-least-once runs.
    # Not strict: the day the fencing holds, this test passes and says so (XPASS).
    request.applymarker(pytest.mark.xfail(reason=f"known defect ({mode}): a resumed zombie's offsets are not always "
                                                 "fenced on Apache Kafka 4.4 (docs/results.md)", strict=False))
    topic, group, bootstrap = unique_name, f"g-{unique_name}", broker.bootstrap_servers
    create_stream(bootstrap, topic, partitions=PARTITIONS)
    frozen_one, other = (workers.start(bootstrap, topic, group, *replica_flags(mode, group, i)) for i in range(2))
    for worker in (frozen_one, other):
        worker.wait_ready()
    records = json_records(real_texts[:1500])
    with CommitSampler(bootstrap, group, topic) as sampler:
        producer = in_background(produce, bootstrap, topic, records, 0.01)
        time.sleep(3)
        assignments_before = len(frozen_one.events("partitions_assigned"))
        with frozen(frozen_one.process.pid):
            time.sleep(2.5 * SESSION_TIMEOUT_MS / 1000)  # past its session: the group evicts it
        producer.join()
        keys = [k for k, _ in records]
        result = reconcile(bootstrap, topic, keys, timeout=240)
        time.sleep(3)  # a few more samples after everything was answered
    assert result.lost(keys) == []

    # Offsets never move backwards, in either mode: with --exactly-once the new owner's offset fetch waits for a
    # zombie's open transaction (KIP-447, require_stable) and the group generation fences the zombie's offsets.
    pairs = zip(sampler.samples, sampler.samples[1:], strict=False)
    backwards = [(p, before[p], after[p], t) for (_, before), (t, after) in pairs
                 for p in range(PARTITIONS) if after[p] < before[p]]
    assert backwards == [], f"committed offsets moved backwards (partition, from, to, when): {backwards[:5]}"

    # Offsets never pass an input without a result at that time.
    answered_at: dict[tuple[int, int], float] = {}
    for message in read_all(bootstrap, [f"{topic}.labels", f"{topic}.dlq"]):
        source = message.source()
        answered_at[source] = min(answered_at.get(source, float("inf")), message.timestamp_ms / 1000)
    ahead = [(p, offset, when) for when, offsets in sampler.samples for p, end in offsets.items()
             for offset in range(end) if answered_at.get((p, offset), float("inf")) > when + 0.005]
    assert ahead == [], f"committed past inputs not answered yet (partition, offset, sample time): {ahead[:5]}"

    noticed = frozen_one.events("partitions_lost") or \
        len(frozen_one.events("partitions_assigned")) > assignments_before
    assert noticed, f"the resumed worker neither lost its partitions nor re-joined:\n{frozen_one.log()}"
    assert frozen_one.alive() and other.alive()
    assert [frozen_one.terminate(), other.terminate()] == [0, 0]
