"""One switch between the two local brokers: Apache Kafka (the suites' default) and Tansu (the demo's).

Both expose ``bootstrap_servers`` (PLAINTEXT) and ``process`` (the broker's ``Popen``, to freeze or kill it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devtools.apache_kafka import ApacheKafka
from devtools.kafka_jars import KAFKA_VERSION
from worker.devbroker import DevBroker

KAFKA, TANSU = "kafka", "tansu"
BROKER_KINDS = (KAFKA, TANSU)
DESCRIPTIONS = {KAFKA: f"Apache Kafka {KAFKA_VERSION} (local, KRaft, one node)", TANSU: "Tansu (local, in memory)"}
LocalBroker = ApacheKafka | DevBroker


@contextmanager
def running_broker(kind: str, workdir: Path | None = None) -> Iterator[LocalBroker]:
    """A started broker of ``kind`` (``workdir``: Kafka's files), always stopped on leaving."""
    if kind not in BROKER_KINDS:
        raise ValueError(f"unknown broker {kind!r}: use one of {', '.join(BROKER_KINDS)}")
    broker = ApacheKafka(workdir) if kind == KAFKA else DevBroker()
    with broker:
        yield broker
