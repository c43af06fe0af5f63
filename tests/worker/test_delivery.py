"""Failed sends: classification, backoff with a fake clock, holding and retrying in order, too-large fallbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import errors as kafka_errors
from kafka.structs import TopicPartition

from tests.worker.fakes import FakeFuture
from worker import codec
from worker.kafka_io import InputRecord
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.pipeline.delivery import Delivery, Outgoing
from worker.pipeline.publish import Publisher
from worker.pipeline.send_failures import FailureKind, advice, backoff_s, classify
from worker.settings import build_settings

TP = TopicPartition("in", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sink:
    """``fault(topic, value)`` returns None (ack), an exception to fail the future with, or ("raise", exc)."""

    def __init__(self, fault=lambda topic, value: None, resolve_now: bool = True):
        self.fault, self.resolve_now = fault, resolve_now
        self.attempts: list[tuple[str, bytes | None]] = []
        self.delivered: list[tuple[str, bytes | None, dict]] = []
        self.futures: list[tuple[FakeFuture, object]] = []

    def send(self, topic, key, value, headers):
        self.attempts.append((topic, value))
        outcome = self.fault(topic, value)
        if isinstance(outcome, tuple):
            raise outcome[1]
        future = FakeFuture()
        if outcome is None:
            future.add_callback(lambda _md: self.delivered.append((topic, value, dict(headers))))
        if self.resolve_now:
            future.resolve(outcome)
        else:
            self.futures.append((future, outcome))
        return future


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict]] = []

    def __getattr__(self, level):
        return lambda event, **fields: self.lines.append((level, event, fields))


def record(offset: int, value: bytes | None = b"text", headers=None, key: bytes | None = b"k") -> InputRecord:
    return InputRecord("in", 0, offset, key, value, list(headers or []), 1_700_000_000_000)


def make_delivery(sink, clock, tracker=None, acked=None):
    tracker = tracker or OffsetTracker()
    tracker.assign([TP])
    acked = acked if acked is not None else []

    def on_acked(message, _metadata):
        tracker.ack(message.ticket)
        acked.append(message.ticket.offset)

    log = Log()
    delivery = Delivery(sink, on_acked=on_acked, is_current=tracker.is_current, metrics=WorkerMetrics(), log=log,
                        backoff_initial_s=0.5, backoff_max_s=30.0, clock=clock)
    return delivery, tracker, acked, log


def message(tracker: OffsetTracker, offset: int, topic: str = "in.labels", on_too_large=None) -> Outgoing:
    ticket = tracker.register(TP, offset)
    return Outgoing(topic, record(offset), ticket, b"label-%d" % offset, [], None, on_too_large=on_too_large)


@pytest.mark.parametrize(("error", "kind"), [
    (kafka_errors.MessageSizeTooLargeError("big"), FailureKind.TOO_LARGE),
    (kafka_errors.RecordListTooLargeError(), FailureKind.TOO_LARGE),
    (kafka_errors.UnknownTopicOrPartitionError(), FailureKind.RETRY),
    (kafka_errors.TopicAuthorizationFailedError({"out"}), FailureKind.RETRY),
    (kafka_errors.KafkaTimeoutError("Failed to update metadata after 10.0 secs."), FailureKind.RETRY),
    (kafka_errors.InvalidRecordError(), FailureKind.RETRY),
    (kafka_errors.NotEnoughReplicasError(), FailureKind.RETRY),
    (kafka_errors.UnknownError(), FailureKind.RETRY),
    (kafka_errors.IllegalStateError("KafkaProducer already closed!"), FailureKind.FATAL),
    (kafka_errors.ProducerFencedError(), FailureKind.FATAL),
    (TypeError("headers must be list-type"), FailureKind.FATAL),
])
def test_send_errors_are_classified(error, kind):
    assert classify(error) is kind


def test_advice_names_the_topic_and_the_fix():
    assert "Write" in advice("out", kafka_errors.TopicAuthorizationFailedError({"out"}))
    assert "create topic 'out'" in advice("out", kafka_errors.UnknownTopicOrPartitionError())
    assert "create topic 'out'" in advice("out", kafka_errors.KafkaTimeoutError("metadata"))
    assert "schema" in advice("out", kafka_errors.InvalidRecordError())
    assert "'out'" in advice("out", kafka_errors.UnknownError())


def test_backoff_doubles_from_the_initial_delay_and_is_capped():
    assert [backoff_s(n, 0.5, 30.0) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff_s(10_000, 0.5, 30.0) == 30.0


def test_a_failed_send_is_retried_with_backoff_and_later_sends_wait_behind_it_in_order():
    clock = Clock()
    broken = {"on": True}
    sink = Sink(lambda topic, value: kafka_errors.UnknownTopicOrPartitionError() if broken["on"] else None)
    delivery, tracker, acked, log = make_delivery(sink, clock)
    for offset in range(3):
        delivery.send(message(tracker, offset))
    assert len(sink.attempts) == 1  # offsets 1 and 2 are held behind the failed 0
    assert tracker.committable() == {TP: 0} and delivery.held_count() == 3
    assert "in.labels" in delivery.problem() and "create topic" in delivery.problem()
    assert delivery.metrics.send_stalled._value.get() == 1

    waits = []
    for _ in range(4):  # retries 1..4 fail: 0.5, 1, 2, 4 s apart, only the oldest message is tried
        wait = delivery.pump()
        assert wait is not None and wait > 0
        clock.now += wait
        waits.append(wait)
        attempts = len(sink.attempts)
        assert delivery.pump() == pytest.approx(2 * wait)
        assert len(sink.attempts) == attempts + 1 and sink.attempts[-1][1] == b"label-0"
    assert waits == [0.5, 1, 2, 4]
    assert delivery.metrics.send_retries.labels("in.labels")._value.get() == 4
    retry_lines = [fields for level, event, fields in log.lines if event == "send_retry"]
    assert len(retry_lines) == 5 and retry_lines[-1]["attempt"] == 5 and retry_lines[-1]["topic"] == "in.labels"
    assert "create topic" in retry_lines[-1]["fix"] and acked == []

    broken["on"] = False  # the operator created the topic
    clock.now += 8
    assert delivery.pump() is None
    assert [value for _, value, _ in sink.delivered] == [b"label-0", b"label-1", b"label-2"]
    assert acked == [0, 1, 2] and tracker.committable() == {TP: 3}
    assert delivery.problem() is None and delivery.metrics.send_stalled._value.get() == 0
    assert any(event == "send_recovered" for _, event, _ in log.lines)
    delivery.send(message(tracker, 3))  # flowing again: sent at once
    assert acked == [0, 1, 2, 3]


def test_sends_that_were_in_flight_when_the_first_failed_are_retried_in_offset_order():
    clock = Clock()
    sink = Sink(resolve_now=False)
    delivery, tracker, acked, _ = make_delivery(sink, clock)
    for offset in range(3):
        delivery.send(message(tracker, offset))
    (f0, _), (f1, _), (f2, _) = sink.futures
    f2.resolve(kafka_errors.KafkaTimeoutError("Expiring 1 record(s)"))  # fails first, arrives on the I/O thread
    f0.resolve(kafka_errors.KafkaTimeoutError("Expiring 1 record(s)"))
    f1.resolve()
    assert acked == [1] and tracker.committable() == {TP: 0}
    delivery.send(message(tracker, 3))  # new sends wait too
    sink.resolve_now = True
    clock.now += delivery.pump()
    assert delivery.pump() is None
    assert [value for _, value in sink.attempts[3:]] == [b"label-0", b"label-2", b"label-3"]
    assert acked == [1, 0, 2, 3] and tracker.committable() == {TP: 4}


def test_a_message_too_large_runs_its_fallback_at_once_or_on_the_retry_thread():
    clock = Clock()
    too_large = kafka_errors.MessageSizeTooLargeError("The message is 3000000 bytes")
    sink = Sink(lambda topic, value: ("raise", too_large) if value == b"label-0" else None)
    delivery, tracker, acked, _ = make_delivery(sink, clock)
    fallbacks = []
    delivery.send(message(tracker, 0, on_too_large=fallbacks.append))
    assert fallbacks == [too_large] and delivery.problem() is None  # raised by send(): handled in place

    sink.fault = lambda topic, value: too_large  # the broker's limit: reported on the producer's I/O thread
    delivery.send(message(tracker, 1, on_too_large=fallbacks.append))
    assert len(fallbacks) == 1  # never on the I/O thread: the retry thread's pump() runs it
    delivery.pump()
    assert fallbacks == [too_large, too_large] and delivery.problem() is None and acked == []


def test_a_message_with_no_smaller_form_left_is_retried_like_any_other_failure():
    clock = Clock()
    sink = Sink(lambda topic, value: kafka_errors.MessageSizeTooLargeError())
    delivery, tracker, _, log = make_delivery(sink, clock)
    delivery.send(message(tracker, 0, topic="in.dlq"))
    assert "max.message.bytes" in delivery.problem()


def test_held_messages_of_a_revoked_partition_are_dropped_not_sent():
    clock = Clock()
    broken = {"on": True}
    sink = Sink(lambda topic, value: kafka_errors.UnknownTopicOrPartitionError() if broken["on"] else None)
    delivery, tracker, acked, _ = make_delivery(sink, clock)
    for offset in range(3):
        delivery.send(message(tracker, offset))
    tracker.revoke([TP])
    broken["on"] = False
    clock.now += 1
    assert delivery.pump() is None
    assert len(sink.attempts) == 1 and delivery.problem() is None and delivery.held_count() == 0


def test_a_fatal_error_stops_the_worker_and_holds_the_commit():
    clock = Clock()
    sink = Sink(lambda topic, value: ("raise", kafka_errors.IllegalStateError("KafkaProducer already closed!")))
    delivery, tracker, _, _ = make_delivery(sink, clock)
    delivery.send(message(tracker, 0))
    assert "IllegalStateError" in delivery.fatal and tracker.committable() == {TP: 0}


def publisher(sink, clock, **options):
    log = Log()
    settings = build_settings(topic="in", model=Path("unused"), **options)
    tracker = OffsetTracker()
    tracker.assign([TP])
    return Publisher(settings, sink, tracker, WorkerMetrics(), model_id="m@1", log=log, clock=clock), tracker, log


class Prediction:
    label, score, top_k = "alpha", 0.9, (("alpha", 0.9),)


def test_a_label_too_large_becomes_a_dead_letter_smaller_and_smaller_until_it_fits():
    clock = Clock()
    big_headers = [("trace", b"t" * 300_000)]
    # The broker takes at most 100 kB: the label (input headers carried over) and the first dead-letter forms fail.
    sink = Sink(lambda topic, value: kafka_errors.MessageSizeTooLargeError() if sum(
        len(v) for _, v in sink_headers[-1]) + len(value or b"") > 100_000 else None)
    sink_headers: list = []
    send = sink.send
    sink.send = lambda topic, key, value, headers: (sink_headers.append(headers), send(topic, key, value, headers))[1]
    pub, tracker, log = publisher(sink, clock, max_message_bytes=200_000)
    value = b"v" * 150_000
    rec = InputRecord("in", 0, 0, b"key", value, big_headers, 1)
    ticket = tracker.register(TP, 0)
    pub.label(rec, ticket, codec.SourceRef("in", 0, 0), "id-0", Prediction())
    for _ in range(5):
        pub.delivery.pump()
    (topic, sent, headers), = sink.delivered
    assert topic == "in.dlq" and headers["error.type"] == b"output_too_large"
    assert sent == value[:65536] and headers["error.value_truncated"] == b"150000"
    assert headers["error.headers_dropped"] == b"1" and "trace" not in headers
    assert "error.key_dropped" not in headers  # the key goes only in the last, empty form
    assert [t for t, _ in sink.attempts] == ["in.labels", "in.dlq", "in.dlq", "in.dlq"]
    assert tracker.committable() == {TP: 1}
    assert pub.metrics.dead_letters.labels("output_too_large")._value.get() == 1
    assert pub.delivery.problem() is None


def test_log_lines_of_failed_sends_never_carry_the_sasl_password():
    clock = Clock()
    sink = Sink(lambda topic, value: kafka_errors.TopicAuthorizationFailedError({"in.labels"}))
    pub, tracker, log = publisher(sink, clock, security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
                                  sasl_username="worker", sasl_password="s3cret-pw")
    pub.label(record(0), tracker.register(TP, 0), codec.SourceRef("in", 0, 0), "id", Prediction())
    clock.now += pub.delivery.pump()
    pub.delivery.pump()
    assert [event for _, event, _ in log.lines] == ["send_retry", "send_retry"]
    assert "Write" in log.lines[0][2]["fix"] and "s3cret-pw" not in repr(log.lines)


class MetadataStub:
    """A producer on a broker without topic auto-creation: no partitions, or a metadata timeout."""

    def __init__(self, outcome):
        self.outcome = outcome

    def partitions_for(self, topic):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.mark.parametrize("outcome", [None, set(), kafka_errors.KafkaTimeoutError("Failed to update metadata")])
def test_start_up_refuses_a_missing_output_topic_with_one_line_naming_the_fix(outcome):
    from worker.exceptions import StartupError
    from worker.kafka_io import KafkaSink

    sink = KafkaSink.__new__(KafkaSink)  # no broker: only the check is under test
    sink.producer = MetadataStub(outcome)
    with pytest.raises(StartupError, match=r"output topic 'in.labels' does not exist .*set --output-topic"):
        sink.check_topic("in.labels", "--output-topic")
