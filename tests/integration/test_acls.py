"""Least privilege on a live Apache Kafka with the StandardAuthorizer (``allow.everyone.if.no.acl.found=false``).

The worker (principal ``User:worker`` over SASL_SSL) runs with exactly the ACLs docs/security.md lists
(``tests.support.acls.worker_acls``) and labels everything; with each one missing it stops at start, exit 2,
with one line naming the permission; with one taken away while it runs it stops being ready, commits nothing
past what was answered, and goes on losing nothing once the ACL is back. The KEDA scaler's principal reads
lag with Describe alone. Inputs are written and results read back by librdkafka as the super user.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from devtools.apache_kafka import ApacheKafka
from tests.support.acls import Acl, grant, revoke, scaler_acls, worker_acls
from tests.support.kafka import committed_offsets, create_stream, produce, reconcile, wait_committed
from tests.support.workers import (
    AT_LEAST_ONCE,
    EXACTLY_ONCE,
    WorkerPool,
    WorkerProcess,
    mode_flags,
    run_worker_once,
    wait_until,
)

PRINCIPAL = "User:worker"
PARTITIONS = 3
HALF = 20


@pytest.fixture(scope="module")
def kafka() -> Iterator[ApacheKafka]:
    with ApacheKafka(authorizer=True) as running:
        yield running


@dataclass
class Stream:
    """One test's topics, group and transactional id, the worker's options, and the ACLs it is granted."""

    kafka: ApacheKafka
    topic: str
    group: str
    mode: str
    flags: tuple[str, ...]

    @property
    def admin(self) -> dict[str, str]:
        return self.kafka.admin_config()

    @property
    def bootstrap(self) -> str:
        return self.kafka.listeners["SASL_SSL"]

    def acls(self) -> list[Acl]:
        transactional_id = f"{self.group}-tx" if self.mode == EXACTLY_ONCE else None
        return worker_acls(PRINCIPAL, self.topic, self.group, transactional_id=transactional_id)

    def acl(self, resource: str) -> Acl:
        """The ACL on ``resource``: 'input', 'group', 'labels', 'dead letters' or 'transactional id'."""
        order = ["input", "group", "labels", "dead letters", "transactional id"]
        return self.acls()[order.index(resource)]

    def write(self, keys: list[str], docs: list[str]) -> None:
        produce(self.bootstrap, self.topic, [(key, json.dumps({"text": doc}).encode())
                                             for key, doc in zip(keys, docs, strict=False)], client_config=self.admin)

    def committed(self) -> int:
        return sum(committed_offsets(self.bootstrap, self.group, self.topic, PARTITIONS, self.admin).values())


@pytest.fixture
def stream_factory(kafka: ApacheKafka, unique_name: str, tmp_path: Path):
    def make(mode: str) -> Stream:
        topic, group = f"{unique_name}-in", f"{unique_name}-group"
        secret = tmp_path / "password"
        secret.write_text(kafka.users["worker"] + "\n")
        flags = ("--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "worker",
                 "--sasl-password-file", str(secret), "--ssl-cafile", str(kafka.tls.ca_cert), *mode_flags(mode))
        if mode == EXACTLY_ONCE:
            flags += ("--transactional-id", f"{group}-tx")
        stream = Stream(kafka, topic, group, mode, flags)
        create_stream(stream.bootstrap, topic, PARTITIONS, client_config=stream.admin)
        return stream
    return make


@pytest.mark.parametrize("mode", [AT_LEAST_ONCE, EXACTLY_ONCE])
def test_exactly_the_documented_acls_label_everything(stream_factory, workers: WorkerPool, news_docs: list[str],
                                                      mode: str) -> None:
    stream = stream_factory(mode)
    grant(stream.admin, stream.acls())
    keys = [f"k{i}" for i in range(2 * HALF)]
    stream.write(keys, news_docs)
    worker = workers.start(stream.bootstrap, stream.topic, stream.group, *stream.flags)
    result = reconcile(stream.bootstrap, stream.topic, keys, timeout=90, client_config=stream.admin, settle_s=1.0)
    assert result.lost(keys) == [] and result.duplicates() == 0, worker.log()
    offsets = wait_committed(stream.bootstrap, stream.group, stream.topic, PARTITIONS, len(keys),
                             client_config=stream.admin)
    assert sum(offsets.values()) == len(keys)
    assert worker.terminate() == 0, worker.log()


@pytest.mark.parametrize(("mode", "missing"), [
    (AT_LEAST_ONCE, "input"), (AT_LEAST_ONCE, "group"), (AT_LEAST_ONCE, "labels"), (AT_LEAST_ONCE, "dead letters"),
    (EXACTLY_ONCE, "transactional id"),
])
def test_each_missing_acl_stops_the_start_naming_it(stream_factory, tiny_bundle_dir: Path, mode: str,
                                                    missing: str) -> None:
    stream = stream_factory(mode)
    absent = stream.acl(missing)
    grant(stream.admin, [acl for acl in stream.acls() if acl != absent])
    result = run_worker_once("--topic", stream.topic, "--group-id", stream.group, "--bootstrap-servers",
                             stream.bootstrap, "--model", str(tiny_bundle_dir), *stream.flags, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "not authorized" in line and PRINCIPAL in line
    assert f"{absent.operation.name} on" in line and repr(absent.name) in line


@pytest.mark.parametrize(("mode", "lost"), [
    (AT_LEAST_ONCE, "labels"), (EXACTLY_ONCE, "labels"), (AT_LEAST_ONCE, "input"), (AT_LEAST_ONCE, "group"),
    (EXACTLY_ONCE, "transactional id"),
])
def test_an_acl_lost_while_running_holds_commits_and_resumes(stream_factory, workers: WorkerPool,
                                                             news_docs: list[str], mode: str, lost: str) -> None:
    stream = stream_factory(mode)
    grant(stream.admin, stream.acls())
    keys = [f"k{i}" for i in range(2 * HALF)]
    stream.write(keys[:HALF], news_docs)
    worker = workers.start(stream.bootstrap, stream.topic, stream.group, *stream.flags,
                           "--send-retry-backoff-max-s", "1")
    wait_committed(stream.bootstrap, stream.group, stream.topic, PARTITIONS, HALF, client_config=stream.admin)
    assert stream.committed() == HALF

    taken = stream.acl(lost)
    revoke(stream.admin, [taken])
    stream.write(keys[HALF:], news_docs[HALF:])
    # The group's refusal may first show as heartbeats going unanswered; /readyz names the permission once a
    # poll or a send is refused.
    wait_until(lambda: refusal_named(worker, taken.name), 30, f"/readyz to name {taken.describe()}")
    assert stream.committed() == HALF, "committed past the last answered record while refused"

    grant(stream.admin, [taken])
    result = reconcile(stream.bootstrap, stream.topic, keys, timeout=90, client_config=stream.admin, settle_s=1.0)
    assert result.lost(keys) == [], worker.log()
    wait_committed(stream.bootstrap, stream.group, stream.topic, PARTITIONS, len(keys), client_config=stream.admin)
    assert stream.committed() == len(keys)
    worker.wait_ready(30)
    assert worker.terminate() == 0, worker.log()


def refusal_named(worker: WorkerProcess, name: str) -> bool:
    status, body = worker.get("/readyz")
    return status == 503 and name in body


def test_the_scaler_reads_lag_with_describe_alone(kafka: ApacheKafka, stream_factory, news_docs: list[str]) -> None:
    stream = stream_factory(AT_LEAST_ONCE)
    stream.write([f"k{i}" for i in range(HALF)], news_docs)
    keda = {**kafka.sasl_ssl_config("keda"), "group.id": stream.group, "enable.auto.commit": False}
    partitions = [TopicPartition(stream.topic, p) for p in range(PARTITIONS)]

    def lag() -> int:  # KEDA's Kafka scaler: the topic's partitions, their end offsets, the group's commits
        consumer = Consumer(keda)
        try:
            ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
            committed = consumer.committed(partitions, timeout=10)
            for tp in committed:
                if tp.error is not None:
                    raise KafkaException(tp.error)
            return sum(ends) - sum(max(tp.offset, 0) for tp in committed)
        finally:
            consumer.close()

    acls = scaler_acls("User:keda", stream.topic, stream.group)
    grant(stream.admin, acls)
    assert lag() == HALF
    for acl in acls:
        revoke(stream.admin, [acl])
        with pytest.raises(KafkaException):
            lag()
        grant(stream.admin, [acl])
