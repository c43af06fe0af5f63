"""What ``topics``, ``send`` and ``tail`` share: the broker option, the admin client and their one-line errors.

These commands let a user create topics, write records and read results with no code and no
other Kafka tooling. They speak plain-text Kafka (the development broker, or a cluster without
TLS/SASL); the worker's own clients are in worker/kafka_config.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from worker.options import CannotStart, option

bootstrap_servers_option = option(
    "--bootstrap-servers", default="localhost:9092", help="Kafka bootstrap servers, comma-separated host:port.")
RESULT_SUFFIXES = (".labels", ".dlq")  # the worker's default output and dead-letter topics: settings.py
# A local broker answers at once; a user who typed the wrong address should not wait kafka-python's 30 s.
CONNECT_TIMEOUT_MS = 5_000


def client_config(bootstrap_servers: str) -> dict[str, Any]:
    """What every client of these commands sets: where the broker is and how long to try reaching it."""
    return {"bootstrap_servers": server_list(bootstrap_servers), "bootstrap_timeout_ms": CONNECT_TIMEOUT_MS,
            "request_timeout_ms": 10_000}


def server_list(bootstrap_servers: str) -> list[str]:
    return [server.strip() for server in bootstrap_servers.split(",") if server.strip()]


def unreachable(bootstrap_servers: str, exc: BaseException) -> CannotStart:
    return CannotStart(f"cannot reach Kafka at {bootstrap_servers} ({type(exc).__name__}): check "
                       "--bootstrap-servers, or start a local broker with `lstm-worker broker`")


def missing_topic(topic: str) -> CannotStart:
    return CannotStart(f"topic {topic!r} does not exist: create it with `lstm-worker topics create {topic}` "
                       "or fix --topic")


@contextmanager
def quiet_client_logs() -> Iterator[None]:
    """kafka-python logs every failed connection attempt; these commands say what failed in one line instead."""
    kafka_logger = logging.getLogger("kafka")
    level = kafka_logger.level
    kafka_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        kafka_logger.setLevel(level)


@contextmanager
def admin_client(bootstrap_servers: str) -> Iterator[KafkaAdminClient]:
    try:
        admin = KafkaAdminClient(**client_config(bootstrap_servers))
    except (KafkaError, OSError, ValueError) as exc:
        raise unreachable(bootstrap_servers, exc) from None
    try:
        yield admin
    finally:
        admin.close()


def with_result_topics(topics: Iterable[str]) -> list[str]:
    """Each topic followed by the worker's default result topics for it (``NAME.labels``, ``NAME.dlq``)."""
    return [name for topic in topics for name in (topic, *(topic + suffix for suffix in RESULT_SUFFIXES))]


def create_topics(bootstrap_servers: str, topics: Iterable[str], partitions: int) -> tuple[list[str], list[str]]:
    """Create each topic that does not exist yet; return (created, already there)."""
    created, existing = [], []
    with quiet_client_logs(), admin_client(bootstrap_servers) as admin:
        for topic in dict.fromkeys(topics):
            try:
                admin.create_topics([NewTopic(topic, partitions, 1)])
                created.append(topic)
            except TopicAlreadyExistsError:
                existing.append(topic)
            except KafkaError as exc:
                raise click.ClickException(f"the broker refused to create topic {topic!r}: {exc}") from None
    return created, existing


def require_topic(bootstrap_servers: str, topic: str) -> None:
    """Refuse (exit 2, one line naming the command that creates it) a topic the broker does not have."""
    with quiet_client_logs(), admin_client(bootstrap_servers) as admin:
        try:
            names = admin.list_topics()
        except KafkaError as exc:
            raise unreachable(bootstrap_servers, exc) from None
    if topic not in names:
        raise missing_topic(topic)
