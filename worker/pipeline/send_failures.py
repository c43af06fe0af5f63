"""What a failed send means, what an operator can do about it, and when to try again.

kafka-python retries transient errors inside the producer; an error that reaches
the worker is sorted into *too large* (the same bytes never fit), *fatal* (the
producer itself is unusable, or not a Kafka error at all: a bug) or *retry*
(everything an operator can fix while the worker waits).
"""

from __future__ import annotations

import enum

from kafka import errors as kafka_errors


class FailureKind(enum.Enum):
    TOO_LARGE = "too_large"
    RETRY = "retry"
    FATAL = "fatal"


BACKOFF_INITIAL_S = 0.5  # the first retry; each later one waits twice as long, up to --send-retry-backoff-max-s
_TOO_LARGE = (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordListTooLargeError)
_FATAL = (kafka_errors.IllegalStateError, kafka_errors.ProducerFencedError)


def classify(exc: BaseException) -> FailureKind:
    if isinstance(exc, _TOO_LARGE):
        return FailureKind.TOO_LARGE
    if isinstance(exc, _FATAL) or not isinstance(exc, kafka_errors.KafkaError):
        return FailureKind.FATAL  # not a Kafka error: a bug, which retrying would only hide
    return FailureKind.RETRY


def own_refusal(exc: BaseException, *, alone: bool) -> bool:
    """Whether a *too large* refusal says the record itself does not fit.

    The producer checks each record before queueing it (that error is always the record's own); the broker
    refuses a whole batch, and kafka-python fails every send queued behind it (and, for an idempotent
    producer, every later one until it is replaced) with that same error. So a broker's refusal counts as the
    record's own only when the record was ``alone`` in flight: by itself in its batch, nothing queued before it.
    """
    return classify(exc) is FailureKind.TOO_LARGE and alone


def advice(topic: str, exc: BaseException, transactional_id: str = "") -> str:
    """What an operator can do about a send to ``topic`` (in a transaction of ``transactional_id``) failing."""
    if isinstance(exc, kafka_errors.TransactionalIdAuthorizationFailedError):
        return f"grant this worker's principal Write on transactional id {transactional_id!r}"
    if isinstance(exc, kafka_errors.AuthorizationError):
        return f"grant this worker's principal Write (and Describe) on topic {topic!r}"
    if isinstance(exc, (kafka_errors.UnknownTopicOrPartitionError, kafka_errors.KafkaTimeoutError)):
        return f"create topic {topic!r} (or point --output-topic / --dlq-topic at an existing one), " \
               "and check that the brokers are reachable"
    if isinstance(exc, (kafka_errors.InvalidRecordError, kafka_errors.PolicyViolationError,
                        kafka_errors.CorruptRecordError)):
        return f"the broker rejects records on topic {topic!r}: check its schema or validation policy"
    if isinstance(exc, _TOO_LARGE):
        return f"raise max.message.bytes of topic {topic!r}"
    return f"check the broker logs and the health of topic {topic!r}"


def backoff_s(attempt: int, maximum_s: float) -> float:
    """Delay before retry number ``attempt`` (1-based): doubles from 0.5 s, capped at ``maximum_s``."""
    return min(maximum_s, BACKOFF_INITIAL_S * 2 ** min(attempt - 1, 62))
