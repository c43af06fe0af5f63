"""The one pipeline, run against both delivery guarantees with in-memory clients: both modes must behave alike.

Every test here runs once per strategy (``mode``), so "the same input gets the
same outcome in at-least-once and exactly-once mode" is asserted, not hoped.
Real-broker versions of these behaviours are in tests/integration and tests/faults.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka.errors import IllegalStateError, ProducerFencedError, TopicAuthorizationFailedError
from kafka.structs import TopicPartition

from tests.worker.fakes import FakeBroker, FakeConsumer, FakeEngine, FakeProducer, RecordingLog, Written
from worker.health import HealthState
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.pipeline.at_least_once import AtLeastOnce
from worker.pipeline.exactly_once import ExactlyOnce
from worker.pipeline.loop import Pipeline
from worker.pipeline.models import ModelWatcher, ServedModel
from worker.pipeline.ports import InputRecord
from worker.pipeline.shadow import Shadow
from worker.settings import build_settings

MODES = ["at-least-once", "exactly-once"]
TOPIC = "in"


def record(partition: int, offset: int, value: bytes | None, key: bytes | None = None,
           headers: list | None = None) -> InputRecord:
    return InputRecord(TOPIC, partition, offset, key, value, headers or [], int(time.time() * 1000))


def doc(partition: int, offset: int, text: str = "a short note about things") -> InputRecord:
    return record(partition, offset, json.dumps({"id": f"{partition}-{offset}", "text": text}).encode())


@dataclass
class Run:
    code: int
    broker: FakeBroker
    log: RecordingLog
    health: HealthState
    metrics: WorkerMetrics
    producer: FakeProducer

    def labels(self) -> list[dict]:
        return [json.loads(w.value) for w in self.broker.records(f"{TOPIC}.labels")]

    def dead_letters(self) -> list[Written]:
        return self.broker.records(f"{TOPIC}.dlq")

    def answered(self) -> dict[tuple[int, int], str]:
        """(partition, offset) -> "label", "review" or the dead letter's error.type; a duplicate fails the test."""
        out: dict[tuple[int, int], str] = {}
        for w in self.broker.records(f"{TOPIC}.review"):
            body = json.loads(w.value)
            out[(body["source"]["partition"], body["source"]["offset"])] = "review"
        for body in self.labels():
            key = (body["source"]["partition"], body["source"]["offset"])
            assert key not in out, f"answered twice: {key}"
            out[key] = "label"
        for w in self.dead_letters():
            headers = dict(w.headers)
            key = (int(headers["source.partition"]), int(headers["source.offset"]))
            assert key not in out, f"answered twice: {key}"
            out[key] = headers["error.type"].decode()
        return out


def run_pipeline(mode: str, records: list[InputRecord], *, until: Callable[[Run], bool] | None = None,
                 during: Callable[[Run, FakeConsumer], None] | None = None, engine: FakeEngine | None = None,
                 shadow_engine: FakeEngine | None = None, timeout_s: float = 20, settings_options: dict | None = None,
                 log_ends: dict[TopicPartition, int] | None = None, **producer_options) -> Run:
    options = dict(batch_size=16, max_wait_ms=5, commit_interval_ms=10, send_retry_backoff_max_s=0.2,
                   shutdown_timeout_s=5, max_message_bytes=200_000) | (settings_options or {})
    settings = build_settings(topic=TOPIC, model=Path("unused"), exactly_once=mode == "exactly-once",
                              transactional_id="t-0" if mode == "exactly-once" else None,
                              shadow_model=Path("unused") if shadow_engine else None,
                              shadow_topic=f"{TOPIC}.shadow" if shadow_engine else None, **options)
    broker, log, metrics, tracker = FakeBroker(), RecordingLog(), WorkerMetrics(), OffsetTracker()
    health = HealthState(30)
    health.model_loaded = True
    producer = FakeProducer(broker, **producer_options)
    consumer = FakeConsumer(broker, records, log_ends)
    common = (settings, producer, consumer, tracker, metrics, log)
    guarantee = (ExactlyOnce(*common, new_producer=lambda: producer) if settings.exactly_once
                 else AtLeastOnce(*common, new_producer=lambda: producer))
    def watcher(served: ServedModel) -> ModelWatcher:
        return ModelWatcher(None, served, poll_s=10, engine_settings={}, metrics=metrics, log=log)

    served = ServedModel(engine or FakeEngine(), None)
    shadow = None
    if shadow_engine is not None:
        shadow_served = ServedModel(shadow_engine, None)
        shadow = Shadow(settings, shadow_served, watcher(shadow_served), metrics, log)
    pipeline = Pipeline(settings, served, watcher(served), consumer, guarantee, tracker, metrics, health, log, shadow)
    result = Run(-1, broker, log, health, metrics, producer)
    done = threading.Event()

    def target() -> None:
        result.code = pipeline.run()
        done.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    everything = {(r.partition, r.offset) for r in records}
    finished = until or (lambda run: set(run.answered()) >= everything and all(
        broker.committed.get(TopicPartition(TOPIC, p), 0) > o for p, o in everything))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done.is_set():
        if during is not None:
            during(result, consumer)
        if finished(result):
            break
        time.sleep(0.01)
    pipeline.request_stop()
    thread.join(10)
    assert not thread.is_alive(), "the pipeline did not stop"
    return result


@pytest.mark.parametrize("mode", MODES)
def test_every_record_is_answered_once_in_input_order_and_committed(mode: str) -> None:
    records = [doc(p, o, "word " * (1 + o % 7)) for p in range(3) for o in range(40)]
    run = run_pipeline(mode, records)
    assert run.code == 0
    assert run.answered() == {(p, o): "label" for p in range(3) for o in range(40)}
    for p in range(3):
        offsets = [b["source"]["offset"] for b in run.labels() if b["source"]["partition"] == p]
        assert offsets == sorted(offsets)  # per input partition, labels go out in input order
        assert run.broker.committed[TopicPartition(TOPIC, p)] == 40
    first = next(b for b in run.labels() if b["source"] == {"topic": TOPIC, "partition": 0, "offset": 0})
    assert first["id"] == "0-0" and first["model"] == "fake@1" and first["label"] in FakeEngine.labels


HOSTILE = [
    (b'{"id": "\\ud800", "text": "lone surrogate id"}', "label"),
    (b'{"id": NaN, "text": "not a number id"}', "label"),
    (b'{"id": 1e999, "text": "infinite id"}', "label"),
    (b'\xef\xbb\xbf{"id": "bom", "text": "byte order mark"}', "label"),
    # Too deep to parse: like any payload that starts as JSON and does not parse, a dead letter (not prose).
    (b'{"text": "deep", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "invalid_json"),
    (b'{"text": "t", "id": "' + b"i" * 900 + b'"}', "label"),
    (b"\xff\xfe not utf-8", "invalid_utf8"),
    (None, "null_value"),
    (b"[1, 2]", "not_json_object"),
    (b'{"id": "e", "text": "   "}', "empty_text"),
    (b'{"id": "n", "text": 5}', "missing_text"),
    (b'{"id": "b", "text": "this one goes boom"}', "inference_error"),
    (b'{"id": "x", "text": "' + b"y" * 200_000 + b'"}', "oversize"),
]


def test_both_modes_answer_malformed_and_hostile_input_alike_with_strict_json() -> None:
    records = [record(0, i, value, key=f"k{i}".encode()) for i, (value, _) in enumerate(HOSTILE)]
    records += [doc(1, i) for i in range(10)]
    expected = {(0, i): outcome for i, (_, outcome) in enumerate(HOSTILE)} | {(1, i): "label" for i in range(10)}
    answers = {}
    for mode in MODES:
        run = run_pipeline(mode, records)
        assert run.code == 0, run.log.events
        answers[mode] = run.answered()
        for w in run.broker.records(f"{TOPIC}.labels"):
            w.value.decode("utf-8")  # strict UTF-8: no lone surrogate written
            json.loads(w.value, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
        ids = {json.loads(w.value)["source"]["offset"]: json.loads(w.value)["id"]
               for w in run.broker.records(f"{TOPIC}.labels") if json.loads(w.value)["source"]["partition"] == 0}
        assert ids[0] == "k0" and ids[1] == "k1" and ids[2] == "k2" and ids[3] == "bom"  # fallback: the key
    assert answers["at-least-once"] == answers["exactly-once"] == expected


@pytest.mark.parametrize("mode", MODES)
def test_a_label_too_large_becomes_a_dead_letter_and_dead_letters_shrink_until_they_fit(mode: str) -> None:
    big_headers = [("trace", b"t" * 3000)]
    records = [record(0, 0, b'{"text": "fine"}', headers=big_headers),  # label + headers > max request
               record(0, 1, b"\xff" * 900, key=b"k" * 10, headers=big_headers),  # its dead letter too
               doc(0, 2)]
    run = run_pipeline(mode, records, max_request_bytes=2000)
    assert run.code == 0
    assert run.answered() == {(0, 0): "output_too_large", (0, 1): "invalid_utf8", (0, 2): "label"}
    shrunk = {dict(w.headers)["source.offset"]: dict(w.headers) for w in run.dead_letters()}
    assert "error.headers_dropped" in shrunk[b"0"] and "trace" not in shrunk[b"0"]
    assert "error.headers_dropped" in shrunk[b"1"]


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_topic_stalls_the_partition_then_everything_goes_out_in_order(mode: str) -> None:
    refusing = threading.Event()
    refusing.set()
    seen_not_ready: list[str] = []
    committed_while_stalled: list[int] = []

    def refuse(written: Written) -> BaseException | None:
        return TopicAuthorizationFailedError("no Write ACL") if refusing.is_set() and written.topic.endswith(
            ".labels") else None

    def during(run: Run, consumer: FakeConsumer) -> None:
        ready, why = run.health.ready()
        if not ready and "not producing" in why:
            seen_not_ready.append(why)
            committed_while_stalled.append(run.broker.committed.get(TopicPartition(TOPIC, 0), 0))
            if len(run.log.named("send_retry")) >= 3:
                refusing.clear()  # an operator fixed the ACL

    records = [doc(0, o) for o in range(30)]
    run = run_pipeline(mode, records, refuse=refuse, during=during)
    assert run.code == 0
    assert seen_not_ready and "grant this worker's principal Write" in seen_not_ready[0]
    assert max(committed_while_stalled) == 0  # nothing committed past the refused record
    assert run.answered() == {(0, o): "label" for o in range(30)}
    offsets = [b["source"]["offset"] for b in run.labels()]
    assert offsets == list(range(30))
    assert run.log.named("send_recovered") and run.health.send_problem is None


@pytest.mark.parametrize("mode", MODES)
def test_an_idle_worker_whose_group_coordinator_stopped_answering_is_not_ready(mode: str) -> None:
    seen: list[tuple[bool, str]] = []

    def during(run: Run, consumer: FakeConsumer) -> None:
        if set(run.answered()) >= {(0, o) for o in range(5)}:  # everything answered: nothing left to fail
            consumer.in_doubt = True
            seen.append(run.health.ready())

    records = [doc(0, o) for o in range(5)]
    run = run_pipeline(mode, records, during=during, until=lambda run: any(not ok for ok, _ in seen))
    assert run.code == 0
    assert any(not ok and "no heartbeat answered" in why for ok, why in seen), seen


@pytest.mark.parametrize("mode", MODES)
def test_an_unusable_producer_stops_the_worker_with_exit_1(mode: str) -> None:
    options = ({"fail_commit": lambda: ProducerFencedError("another producer took the id")}
               if mode == "exactly-once" else {"refuse": lambda w: IllegalStateError("producer closed")})
    run = run_pipeline(mode, [doc(0, o) for o in range(5)], until=lambda r: False, timeout_s=5, **options)
    assert run.code == 1
    assert run.broker.committed.get(TopicPartition(TOPIC, 0), 0) == 0
    [failed] = run.log.named("worker_failed")
    assert ("fenced" in failed["error"]) if mode == "exactly-once" else ("IllegalStateError" in failed["error"])


@pytest.mark.parametrize("mode", MODES)
def test_a_batch_revoked_while_it_is_scored_is_not_published(mode: str) -> None:
    release = threading.Event()
    scoring = threading.Event()

    def before_predict() -> None:
        scoring.set()
        assert release.wait(10)

    revoked: list[bool] = []

    def during(run: Run, consumer: FakeConsumer) -> None:
        if scoring.is_set() and not revoked:
            consumer.request_revoke([TopicPartition(TOPIC, 0)])
            revoked.append(True)
            time.sleep(0.1)  # the loop polls (and so revokes) while the batch is still being scored
            release.set()

    records = [doc(p, o) for p in range(2) for o in range(8)]
    run = run_pipeline(mode, records, engine=FakeEngine(before_predict), during=during,
                       until=lambda r: {(1, o) for o in range(8)} <= set(r.answered()))
    assert run.code == 0
    assert all(partition == 1 for partition, _ in run.answered()), "a revoked partition's batch was published"
    assert run.metrics.dropped_revoked._value.get() >= 8


@pytest.mark.parametrize("mode", MODES)
def test_stopping_answers_what_was_polled_and_commits_it(mode: str) -> None:
    records = [doc(0, o) for o in range(5)]
    run = run_pipeline(mode, records, until=lambda r: r.metrics.records_in._value.get() >= 5)
    assert run.code == 0
    assert run.answered() == {(0, o): "label" for o in range(5)}
    assert run.broker.committed[TopicPartition(TOPIC, 0)] == 5
    assert run.producer.closed


def test_exactly_once_retries_an_aborted_transaction_without_duplicates() -> None:
    failures = iter([TopicAuthorizationFailedError("flaky"), None, None, None, None])

    def fail_commit() -> BaseException | None:
        return next(failures, None)

    run = run_pipeline("exactly-once", [doc(0, o) for o in range(10)], fail_commit=fail_commit)
    assert run.code == 0
    assert run.answered() == {(0, o): "label" for o in range(10)}  # answered() fails on any duplicate
    assert run.log.named("transaction_aborted") and run.log.named("send_recovered")


class ContraryEngine(FakeEngine):
    """A shadow that disagrees with FakeEngine on every other length."""

    def predict_proba(self, id_lists):
        probabilities = super().predict_proba(id_lists)
        flip = [len(ids) % 2 == 0 for ids in id_lists]
        probabilities[flip] = probabilities[flip][:, ::-1]
        return probabilities


@pytest.mark.parametrize("mode", MODES)
def test_a_shadow_model_changes_no_primary_output_and_every_scored_record_is_counted(mode: str) -> None:
    records = [doc(p, o, "word " * (1 + o % 5)) for p in range(2) for o in range(40)]
    records.append(record(0, 40, b"\xff not utf-8"))
    records.append(record(1, 40, b'{"text": "goes boom"}'))
    alone = run_pipeline(mode, records)
    everything = {(r.partition, r.offset) for r in records}
    shadowed = run_pipeline(mode, records, shadow_engine=ContraryEngine(model_id="shadow@2"),
                            until=lambda run: set(run.answered()) >= everything and (
                                run.metrics.shadow_records.labels("shadow@2")._value.get()
                                + run.metrics.shadow_skipped._value.get() >= 80))
    assert shadowed.code == alone.code == 0
    assert shadowed.labels() == alone.labels() and shadowed.answered() == alone.answered()
    scored = shadowed.metrics.shadow_records.labels("shadow@2")._value.get()
    skipped = shadowed.metrics.shadow_skipped._value.get()
    assert scored > 0 and scored + skipped == 80  # every labelled record: scored by the shadow, or counted skipped
    agreed = shadowed.metrics.shadow_agreements.labels("shadow@2")._value.get()
    disagreed = sum(s.value for m in shadowed.metrics.shadow_disagreements.collect() for s in m.samples
                    if s.name.endswith("_total"))
    assert agreed + disagreed == scored and agreed > 0 and disagreed > 0
    shadow_labels = [json.loads(w.value) for w in shadowed.broker.records(f"{TOPIC}.shadow")]
    assert len(shadow_labels) == scored and {b["model"] for b in shadow_labels} == {"shadow@2"}
    assert shadowed.broker.committed == alone.broker.committed


@pytest.mark.parametrize("mode", MODES)
def test_low_confidence_labels_go_to_review_and_the_rest_are_flagged_without_a_review_topic(mode: str) -> None:
    records = [doc(0, o, "word " * (1 + o % 9)) for o in range(36)] + [record(0, 36, b"\xff")]
    routed = run_pipeline(mode, records, settings_options={"min_confidence": 0.8, "review_topic": f"{TOPIC}.review"})
    answers = routed.answered()
    assert set(answers) == {(0, o) for o in range(37)} and answers[(0, 36)] == "invalid_utf8"
    review = [json.loads(w.value) for w in routed.broker.records(f"{TOPIC}.review")]
    assert review and routed.labels()
    assert all(b["score"] < 0.8 and b["low_confidence"] and "review_reason" in b for b in review)
    assert all(b["score"] >= 0.8 and "low_confidence" not in b for b in routed.labels())
    assert routed.metrics.routed_to_review._value.get() == len(review)
    assert routed.broker.committed[TopicPartition(TOPIC, 0)] == 37
    flagged = run_pipeline(mode, records, settings_options={"min_confidence": 0.8})
    assert len(flagged.labels()) == 36 and not flagged.broker.records(f"{TOPIC}.review")
    assert {b["source"]["offset"] for b in flagged.labels() if b.get("low_confidence")} == {
        b["source"]["offset"] for b in review}
