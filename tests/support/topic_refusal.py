"""Make a topic of a live Apache Kafka refuse writes, for real, and accept them again.

``refuse_writes``: ``message.timestamp.before.max.ms=0`` on the topic: every record the producer stamped before
the broker reads it (all of them) is refused with INVALID_TIMESTAMP, until ``accept_writes`` restores the
default (a send fault that clears while the worker runs). ``min.insync.replicas`` above the replica count cannot
do it on one broker: Kafka takes min(min.insync.replicas, replication factor) as the effective minimum.
``limit_record_size`` sets ``max.message.bytes`` below a record: a real RecordTooLarge refusal.
Tansu ignores these settings: tests that use them are marked ``kafka_only`` (tests/support/brokers.py).
"""

from __future__ import annotations

import time

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

WRITES_REFUSED = "Tansu ignores topic timestamp limits: no way to make a topic refuse writes and clear it"
TIMESTAMP_LIMIT = "message.timestamp.before.max.ms"
NO_TIMESTAMP_LIMIT = str(2**63 - 1)  # Kafka's default: any timestamp in the past is accepted
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
    """From now on every write to ``topic`` is refused with INVALID_TIMESTAMP (not retriable by the producer)."""
    set_topic_config(bootstrap, topic, TIMESTAMP_LIMIT, "0")


def accept_writes(bootstrap: str, topic: str) -> None:
    """Undo :func:`refuse_writes`: the next try lands."""
    set_topic_config(bootstrap, topic, TIMESTAMP_LIMIT, NO_TIMESTAMP_LIMIT)


def limit_record_size(bootstrap: str, topic: str, max_bytes: int) -> None:
    """``topic`` refuses record batches over ``max_bytes`` (RecordTooLarge, not retriable)."""
    set_topic_config(bootstrap, topic, "max.message.bytes", str(max_bytes))
