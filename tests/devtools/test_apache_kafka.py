"""The local Apache Kafka launcher (devtools/): every listener serves, refusals are real, no JVM is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from devtools.apache_kafka import ApacheKafka

pytestmark = pytest.mark.integration


def _brokers(config: dict[str, str]) -> dict:
    return AdminClient(config).list_topics(timeout=10).brokers


def _refused(config: dict[str, str]) -> bool:
    try:
        AdminClient(config).list_topics(timeout=5)
    except KafkaException:
        return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) no longer runs.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_every_listener_serves_and_refuses_the_wrong_credentials() -> None:
    with ApacheKafka() as kafka:
        tls = kafka.tls
        ssl = {"bootstrap.servers": kafka.listeners["SSL"], "security.protocol": "SSL",
               "ssl.ca.location": str(tls.ca_cert)}
        mutual = ssl | {"ssl.certificate.location": str(tls.client_cert), "ssl.key.location": str(tls.client_key)}
        assert _brokers({"bootstrap.servers": kafka.bootstrap_servers})
        assert _brokers(ssl) and _brokers(mutual)
        for user in kafka.users:
            for mechanism in ("SCRAM-SHA-512", "PLAIN"):
                assert _brokers(kafka.sasl_ssl_config(user, mechanism)), (user, mechanism)
        assert _refused(kafka.admin_config() | {"sasl.password": "wrong"})
        assert _refused(ssl | {"ssl.ca.location": str(tls.other_ca_cert)})
        jvm = kafka.process.pid
        workdir = kafka.workdir
    assert not _alive(jvm)
    assert not workdir.exists()


def test_with_the_authorizer_only_super_users_and_granted_principals_may_act() -> None:
    with ApacheKafka(authorizer=True) as kafka:
        admin = AdminClient(kafka.admin_config())
        admin.create_topics([NewTopic("granted-only", 1, 1)])["granted-only"].result(30)
        anonymous = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
        assert "granted-only" not in anonymous.list_topics(timeout=10).topics
        with pytest.raises(KafkaException, match="AUTHORIZATION_FAILED"):
            anonymous.create_topics([NewTopic("refused", 1, 1)])["refused"].result(30)
        worker = AdminClient(kafka.sasl_ssl_config("worker"))
        assert "granted-only" not in worker.list_topics(timeout=10).topics


def test_no_jvm_outlives_a_python_process_killed_with_sigkill(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from devtools.apache_kafka import ApacheKafka
        kafka = ApacheKafka(Path(sys.argv[1])).start()
        print(kafka.process.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "kafka")], stdout=subprocess.PIPE,
                              text=True)
    try:
        jvm = int(parent.stdout.readline())
        assert _alive(jvm)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while _alive(jvm) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(jvm), "the broker JVM outlived the Python process that started it"
    finally:
        parent.kill()
        parent.wait()
