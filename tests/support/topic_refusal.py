"""Make a topic of a live Apache Kafka refuse writes, for real, and accept them again.

``refuse_writes``: ``min.insync.replicas=2`` on a topic with one replica. Every ``acks=all`` write (the worker's
producer, idempotent, always uses it) is answered NOT_ENOUGH_REPLICAS: a retriable refusal the producer keeps
retrying, which ends the moment ``accept_writes`` sets it back to 1 (a send fault that clears while the worker
runs). ``limit_record_size`` sets ``max.message.bytes`` below a record: a real RecordTooLarge refusal.
Tansu ignores both settings: tests that use them are marked ``kafka_only`` (tests/support/brokers.py).
"""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

WRITES_REFUSED = "Tansu ignores min.insync.replicas: no way to make a topic refuse writes and clear it"
SIZE_LIMITED = "Tansu ignores max.message.bytes: no broker-side record size limit"


def set_topic_config(bootstrap: str, topic: str, name: str, value: str, timeout: float = 30) -> None:
    """Set ``name`` on ``topic`` and wait until the broker describes the new value (it then applies it)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        (described,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
        if described.result(timeout=timeout)[name].value == value:
            return
        assert time.monotonic() < deadline, f"{topic}: {name} did not become {value}"
        time.sleep(0.1)


def refuse_writes(bootstrap: str, topic: str) -> None:
    """From now on every acks=all write to ``topic`` is refused with NOT_ENOUGH_REPLICAS (retriable)."""
    set_topic_config(bootstrap, topic, "min.insync.replicas", "2")


def accept_writes(bootstrap: str, topic: str) -> None:
    """Undo :func:`refuse_writes`: the producer's next retry lands."""
    set_topic_config(bootstrap, topic, "min.insync.replicas", "1")


def limit_record_size(bootstrap: str, topic: str, max_bytes: int) -> None:
    """``topic`` refuses record batches over ``max_bytes`` (RecordTooLarge, not retriable)."""
    set_topic_config(bootstrap, topic, "max.message.bytes", str(max_bytes))
