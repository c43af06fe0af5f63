"""The loop with an in-memory source and sink: ordering, dead letters, bisection, commits, revocation."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from kafka.errors import CommitFailedError, KafkaTimeoutError
from kafka.structs import TopicPartition

from tests.worker.fakes import FakeFuture
from worker.engine import Prediction
from worker.exceptions import InferenceError
from worker.kafka_io import InputRecord
from worker.pipeline.loop import WorkerLoop
from worker.settings import build_settings

LABELS = ("alpha", "beta", "gamma")
POISON = 999  # a token id the fake engine cannot score


class FakeEngine:
    """Deterministic scores from the ids; fails a whole batch if any row contains POISON."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def token_ids(self, text: str) -> list[int]:
        return [POISON if word == "poison" else len(word) for word in text.split()]

    def predict_proba(self, id_lists):
        self.calls.append(len(id_lists))
        if any(POISON in ids for ids in id_lists):
            raise InferenceError(f"inference failed on a batch of {len(id_lists)}")
        probs = np.full((len(id_lists), len(LABELS)), 0.1, dtype=np.float32)
        for row, ids in enumerate(id_lists):
            probs[row, sum(ids) % len(LABELS)] = 0.8
        return probs

    def to_predictions(self, probabilities, top_k=1):
        out = []
        for probs in probabilities:
            order = np.argsort(-probs, kind="stable")[:top_k]
            out.append(Prediction(LABELS[order[0]], float(probs[order[0]]),
                                  tuple((LABELS[j], float(probs[j])) for j in order)))
        return out


class FakeSink:
    """Acks sends at once; ``fail_offsets`` fail for ever, ``failures`` maps an offset to how often it fails first."""

    def __init__(self, auto_ack: bool = True, fail_offsets: set[int] = frozenset(),
                 failures: dict[int, int] | None = None):
        self.auto_ack, self.fail_offsets = auto_ack, fail_offsets
        self.failures = dict(failures or {})
        self.sent: list[tuple[str, bytes | None, bytes | None, dict, FakeFuture]] = []
        self.lock = threading.Lock()

    def send(self, topic, key, value, headers):
        future = FakeFuture()
        with self.lock:
            self.sent.append((topic, key, value, dict(headers), future))
        offset = int(dict(headers).get("source.offset", b"-1")) if topic.endswith(".dlq") else \
            json.loads(value)["source"]["offset"]
        if offset in self.fail_offsets or self.failures.get(offset, 0) > 0:
            self.failures[offset] = self.failures.get(offset, 0) - 1
            future.resolve(KafkaTimeoutError("delivery timed out"))
        elif self.auto_ack:
            future.resolve()
        return future

    def on(self, topic):
        with self.lock:
            return [s for s in self.sent if s[0] == topic]

    def flush(self, timeout_s):
        pass

    def close(self, timeout_s):
        self.closed = True


class FakeSource:
    """Hands out the given records a few at a time; can revoke a partition after some polls."""

    def __init__(self, records: list[InputRecord], chunk: int = 7, revoke_after_polls: int | None = None):
        self.records, self.chunk = list(records), chunk
        self.commits: list[dict[TopicPartition, int]] = []
        self.partitions = {r.tp for r in records}
        self.revoke_after_polls = revoke_after_polls
        self.polls = 0
        self.paused = False
        self.resumes = 0
        self.fail_next_commit = False

    def subscribe(self, hooks):
        self.hooks = hooks
        hooks.assigned(sorted(self.partitions))

    def on_revoked(self, partitions):
        """What kafka_io._Listener does: prepare, commit what is safe, finish."""
        offsets = self.hooks.prepare_revoke(partitions)
        self.rewind = self.hooks.resume_offsets(partitions)
        if offsets:
            self.commits.append(dict(offsets))
        self.hooks.finish_revoke(partitions, offsets or None, None)

    def poll(self, timeout_ms, max_records):
        self.polls += 1
        if self.revoke_after_polls is not None and self.polls == self.revoke_after_polls:
            # Like kafka-python: the revoked partition's records keep coming until the rebalance completes.
            revoked = TopicPartition("in", 1)
            self.on_revoked([revoked])
            self.partitions.discard(revoked)
        if self.revoke_after_polls is not None and self.polls == self.revoke_after_polls + 3:
            self.records = [r for r in self.records if r.tp != TopicPartition("in", 1)]
        if self.paused or not self.records:
            time.sleep(timeout_ms / 1000 / 10)
            return []
        take = min(self.chunk, max_records)
        out, self.records = self.records[:take], self.records[take:]
        return out

    def commit(self, offsets):
        if self.fail_next_commit:
            self.fail_next_commit = False
            raise CommitFailedError("group rebalanced")
        self.commits.append(dict(offsets))

    def pause(self):
        self.paused = True

    def resume(self):
        self.paused = False
        self.resumes += 1

    def assignment(self):
        return set(self.partitions)

    def lag(self):
        return {}

    def close(self):
        self.closed = True


def record(partition: int, offset: int, value: bytes | None, key: bytes | None = None) -> InputRecord:
    return InputRecord("in", partition, offset, key, value, [("traceparent", b"t-%d" % offset)], 1_700_000_000_000)


def settings(**overrides):
    options = {"batch_size": 8, "max_wait_ms": 5, "commit_interval_ms": 10, "shutdown_timeout_s": 5.0,
               "send_retry_backoff_s": 0.01, "send_retry_backoff_max_s": 0.05, **overrides}
    return build_settings(topic="in", model=Path("unused"), **options)


def run_until(loop: WorkerLoop, done, timeout_s: float = 10.0) -> int:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(loop.run()))
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    loop.request_stop()
    thread.join(timeout_s)
    assert not thread.is_alive(), "loop did not stop"
    return result[0]


def make_loop(records, sink=None, engine=None, source=None, **overrides):
    source = source or FakeSource(records)
    sink = sink or FakeSink()
    engine = engine or FakeEngine()
    return WorkerLoop(settings(**overrides), engine, source, sink, model_id="fake@1"), source, sink, engine


def test_every_record_is_labelled_in_partition_order_and_committed():
    records = [record(p, o, f"word{'s' * o} text {p}".encode(), key=b"k%d" % o) for p in (0, 1) for o in range(30)]
    loop, source, sink, engine = make_loop(records)
    code = run_until(loop, lambda: len(sink.on("in.labels")) == 60)
    assert code == 0
    outputs = [json.loads(v) for _, _, v, _, _ in sink.on("in.labels")]
    for p in (0, 1):
        offsets = [o["source"]["offset"] for o in outputs if o["source"]["partition"] == p]
        assert offsets == list(range(30))
    first = outputs[0]
    expected = engine.to_predictions(engine.predict_proba([engine.token_ids(records[0].value.decode())]), 3)[0]
    assert first["label"] == expected.label and first["model"] == "fake@1" and first["id"] == "k0"
    assert sink.on("in.labels")[0][3]["traceparent"] == b"t-0"
    final = {tp: off for commit in source.commits for tp, off in commit.items()}
    assert final == {TopicPartition("in", 0): 30, TopicPartition("in", 1): 30}


def test_bad_records_are_dead_lettered_without_failing_their_batch_mates():
    values = [b"good one", b"\xff\xfe", b"good two", b"   ", b'{"id": 5}', b"good three", None]
    records = [record(0, o, v) for o, v in enumerate(values)]
    loop, source, sink, _ = make_loop(records)
    assert run_until(loop, lambda: len(sink.sent) == 7) == 0
    labelled = [json.loads(v)["source"]["offset"] for _, _, v, _, _ in sink.on("in.labels")]
    assert labelled == [0, 2, 5]
    dead = {int(h["source.offset"]): h["error.type"] for _, _, _, h, _ in sink.on("in.dlq")}
    assert dead == {1: b"invalid_utf8", 3: b"empty_text", 4: b"missing_text", 6: b"null_value"}
    assert sink.on("in.dlq")[0][2] == b"\xff\xfe"  # the original value, untouched
    assert source.commits[-1] == {TopicPartition("in", 0): 7}


def test_inference_failure_is_bisected_down_to_the_one_bad_record():
    texts = [f"doc number {i}" for i in range(16)]
    texts[11] = "a poison pill"
    records = [record(0, o, t.encode()) for o, t in enumerate(texts)]
    # One batch of all 16: wait long enough that the batch fills by count.
    loop, source, sink, engine = make_loop(records, source=FakeSource(records, chunk=16), batch_size=16,
                                           max_wait_ms=2000)
    assert run_until(loop, lambda: len(sink.sent) == 16) == 0
    dead = sink.on("in.dlq")
    assert len(dead) == 1 and dead[0][3]["error.type"] == b"inference_error" and dead[0][3]["source.offset"] == b"11"
    labelled = [json.loads(v)["source"]["offset"] for _, _, v, _, _ in sink.on("in.labels")]
    assert labelled == [o for o in range(16) if o != 11]
    assert engine.calls[0] == 16 and max(engine.calls[1:]) <= 8  # the batch was split, not retried whole
    assert loop.metrics.dead_letters.labels("inference_error")._value.get() == 1


def test_a_send_that_keeps_failing_is_retried_holds_the_commit_back_and_never_stops_the_worker():
    records = [record(0, o, b"some text") for o in range(6)]
    loop, source, sink, _ = make_loop(records, sink=FakeSink(fail_offsets={3}))
    loop.health.model_loaded = True
    retries = loop.metrics.send_retries.labels("in.labels")
    states: list = []
    code = run_until(loop, lambda: retries._value.get() >= 5 and states.append(
        (loop.health.ready(), source.paused)) is None)
    assert code == 0  # SIGTERM still drains and exits 0; offset 3 is read again after a restart
    (ready, message), paused = states[0]
    assert not ready and "in.labels" in message and "KafkaTimeoutError" in message and paused
    committed = max((c.get(TopicPartition("in", 0), 0) for c in source.commits), default=0)
    assert committed == 3
    labelled = [json.loads(v)["source"]["offset"] for _, _, v, _, f in sink.on("in.labels") if f.outcome[0] == "ok"]
    assert labelled == [0, 1, 2]  # 4 and 5 wait behind 3: they are never sent before it


def test_a_send_that_fails_for_a_while_is_delivered_in_order_once_the_fault_clears():
    records = [record(0, o, b"some text") for o in range(8)]
    loop, source, sink, _ = make_loop(records, sink=FakeSink(failures={3: 4}))
    assert run_until(loop, lambda: source.commits and source.commits[-1] == {TopicPartition("in", 0): 8}) == 0
    delivered = [json.loads(v)["source"]["offset"] for _, _, v, _, f in sink.on("in.labels") if f.outcome[0] == "ok"]
    assert delivered == list(range(8))
    assert loop.metrics.send_retries.labels("in.labels")._value.get() == 4
    assert loop.health.send_problem is None and loop.metrics.send_stalled._value.get() == 0


def test_commit_waits_for_out_of_order_acks():
    records = [record(0, o, b"text") for o in range(4)]
    loop, source, sink, _ = make_loop(records, sink=FakeSink(auto_ack=False))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(loop.run()))
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while len(sink.sent) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        futures = [s[4] for s in sink.sent]
        futures[3].resolve()
        futures[1].resolve()
        time.sleep(0.1)
        assert all(TopicPartition("in", 0) not in c or c[TopicPartition("in", 0)] == 0 for c in source.commits)
        futures[0].resolve()
        deadline = time.monotonic() + 5
        while not any(c.get(TopicPartition("in", 0)) == 2 for c in source.commits) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert any(c.get(TopicPartition("in", 0)) == 2 for c in source.commits)
        futures[2].resolve()
    finally:
        loop.request_stop()
        thread.join(10)
    assert result == [0] and source.commits[-1] == {TopicPartition("in", 0): 4}


def test_backpressure_pauses_fetching_when_too_much_is_in_flight():
    records = [record(0, o, b"text") for o in range(40)]
    sink = FakeSink(auto_ack=False)
    loop, source, _, _ = make_loop(records, sink=sink, source=FakeSource(records, chunk=5), max_in_flight=10)
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not source.paused and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.paused
        time.sleep(0.2)
        assert len(sink.sent) == 10  # nothing beyond the in-flight bound was taken
        for s in list(sink.sent):
            s[4].resolve()
        deadline = time.monotonic() + 5
        while len(sink.sent) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.resumes >= 1 and len(sink.sent) == 20  # resumed, took the next 10, paused again
        assert source.paused
    finally:
        loop.request_stop()
        for s in list(sink.sent):
            s[4].resolve()
        thread.join(10)


def test_revoked_partition_commits_what_is_safe_and_never_afterwards():
    records = [record(p, o, b"text") for o in range(20) for p in (0, 1)]
    source = FakeSource(records, chunk=4, revoke_after_polls=4)
    loop, _, sink, _ = make_loop(records, source=source)
    assert run_until(loop, lambda: source.polls > 6 and not source.records) == 0
    p1 = TopicPartition("in", 1)
    p1_commits = [c[p1] for c in source.commits if p1 in c]
    labelled_p1 = [json.loads(v)["source"]["offset"] for _, _, v, _, _ in sink.on("in.labels")
                   if json.loads(v)["source"]["partition"] == 1]
    # Commits for the revoked partition never pass what was labelled before revocation, and records of it
    # polled after the revocation are neither labelled nor committed.
    assert p1_commits and max(p1_commits) <= len(labelled_p1)
    assert all(c.get(p1, 0) <= max(p1_commits) for c in source.commits)
    assert loop.metrics.dropped_revoked._value.get() > 0
    assert labelled_p1 == list(range(len(labelled_p1)))
    assert max(c.get(TopicPartition("in", 0), 0) for c in source.commits) == 20


def test_a_failed_commit_is_logged_and_retried_not_fatal():
    records = [record(0, o, b"text") for o in range(5)]
    source = FakeSource(records)
    source.fail_next_commit = True
    loop, _, sink, _ = make_loop(records, source=source)
    assert run_until(loop, lambda: any(c.get(TopicPartition("in", 0)) == 5 for c in source.commits)) == 0
    assert loop.metrics.commits.labels("failed")._value.get() == 1


@pytest.mark.parametrize("signal_twice", [False])
def test_stop_drains_queued_work_before_exit(signal_twice):
    records = [record(0, o, b"text here") for o in range(50)]
    loop, source, sink, _ = make_loop(records, source=FakeSource(records, chunk=50), max_wait_ms=50)
    assert run_until(loop, lambda: source.polls >= 1 and not source.records) == 0
    assert len(sink.sent) == 50 and source.commits[-1] == {TopicPartition("in", 0): 50}


def test_oversize_dead_letter_keeps_the_original_value_unless_the_producer_cannot_carry_it():
    fits = b"w" * 5000
    huge = b"w" * (2 << 20)  # over max_dead_letter_bytes (1 MiB floor): only its head is dead-lettered
    records = [record(0, 0, fits), record(0, 1, huge), record(0, 2, b"fine text")]
    loop, source, sink, _ = make_loop(records, max_message_bytes=1000)
    assert run_until(loop, lambda: len(sink.sent) == 3) == 0
    dead = {int(h["source.offset"]): (v, h) for _, _, v, h, _ in sink.on("in.dlq")}
    assert dead[0][0] == fits and "error.value_truncated" not in dead[0][1]
    assert dead[1][0] == huge[:1000] and dead[1][1]["error.value_truncated"] == str(len(huge)).encode()
    assert dead[1][1]["error.type"] == b"oversize"
    assert source.commits[-1] == {TopicPartition("in", 0): 3}


class RebalancingSource(FakeSource):
    """Revokes everything on the first poll and assigns again only after a few more polls."""

    def __init__(self, records, reassign_after_polls: int):
        super().__init__(records)
        self.reassign_after_polls = reassign_after_polls
        self.assigned_at_close: set | None = None

    def poll(self, timeout_ms, max_records):
        self.polls += 1
        if self.polls == 1:
            self.on_revoked(sorted(self.partitions))
            self.hooks.request_stop()  # SIGTERM arrives while the group waits for our join
        if self.polls == self.reassign_after_polls:
            self.hooks.assigned(sorted(self.partitions))
        return []

    def close(self):
        self.assigned_at_close = self.polls >= self.reassign_after_polls


def test_stop_during_a_rebalance_waits_for_the_assignment_before_leaving():
    source = RebalancingSource([record(0, 0, b"text")], reassign_after_polls=8)
    loop, _, _, _ = make_loop([], source=source)
    thread = threading.Thread(target=loop.run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and source.assigned_at_close is True
