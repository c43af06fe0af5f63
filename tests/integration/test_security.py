"""``lstm-worker run`` on a live Apache Kafka over TLS and SASL, with its documented options only.

Each protocol labels a stream (server-authenticated TLS, mutual TLS, SASL_SSL with SCRAM-SHA-512 and with
PLAIN). The broker runs the StandardAuthorizer and each test grants the worker's ACLs to the principal that
protocol makes it (``User:ANONYMOUS``, the client certificate's ``User:CN=client``, ``User:worker``), so a
stream is labelled only when the broker saw the identity the options were meant to present. Each way of
getting the connection wrong ends at start, exit 2 within 30 s, with one line naming the cause and no
client log lines. Inputs are written and results read back by librdkafka as the super user.

The worker reads its credentials from files laid out as deploy/k8s mounts the Secret ``lstm-worker-kafka``
(``password``, ``ca.crt``, ``tls.crt``, ``tls.key`` in one directory; docs/security.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.apache_kafka import ApacheKafka
from tests.support.acls import grant, worker_acls
from tests.support.kafka import create_stream, produce, reconcile
from tests.support.ports import free_port
from tests.support.workers import WorkerPool, run_worker_once

DOCUMENTS = 60
START_UP_LIMIT_S = 30


@pytest.fixture(scope="module")
def kafka() -> Iterator[ApacheKafka]:
    with ApacheKafka(authorizer=True) as running:
        yield running


def mounted_secret(directory: Path, kafka: ApacheKafka, password: str | None = None,
                   ca: Path | None = None) -> Path:
    """The Secret's files as the pod sees them: the SASL password (with the newline an editor leaves), the CA, and
    the client certificate and key for mutual TLS."""
    secret = directory / "kafka"
    secret.mkdir(exist_ok=True)
    (secret / "password").write_text((password or kafka.users["worker"]) + "\n")
    shutil.copy(ca or kafka.tls.ca_cert, secret / "ca.crt")
    shutil.copy(kafka.tls.client_cert, secret / "tls.crt")
    shutil.copy(kafka.tls.client_key, secret / "tls.key")
    return secret


def tls_flags(secret: Path) -> tuple[str, ...]:
    return "--security-protocol", "SSL", "--ssl-cafile", str(secret / "ca.crt")


def sasl_flags(secret: Path, mechanism: str) -> tuple[str, ...]:
    return ("--security-protocol", "SASL_SSL", "--sasl-mechanism", mechanism, "--sasl-username", "worker",
            "--sasl-password-file", str(secret / "password"), "--ssl-cafile", str(secret / "ca.crt"))


# setup -> (listener, principal the broker sees)
SETUPS = {
    "tls": ("SSL", "User:ANONYMOUS"),
    "mutual-tls": ("SSL", "User:CN=client"),
    "sasl-scram-sha-512": ("SASL_SSL", "User:worker"),
    "sasl-plain": ("SASL_SSL", "User:worker"),
}


def setup_flags(kafka: ApacheKafka, setup: str, directory: Path) -> tuple[str, ...]:
    secret = mounted_secret(directory, kafka)
    if setup == "tls":
        return tls_flags(secret)
    if setup == "mutual-tls":
        return (*tls_flags(secret), "--ssl-certfile", str(secret / "tls.crt"), "--ssl-keyfile", str(secret / "tls.key"))
    return sasl_flags(secret, "PLAIN" if setup == "sasl-plain" else "SCRAM-SHA-512")


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_each_protocol_labels_a_stream(kafka: ApacheKafka, workers: WorkerPool, news_docs: list[str],
                                       unique_name: str, tmp_path: Path, setup: str) -> None:
    admin = kafka.admin_config()
    topic, group = f"{unique_name}-in", f"{unique_name}-group"
    listener, principal = SETUPS[setup]
    create_stream(admin["bootstrap.servers"], topic, client_config=admin)
    grant(admin, worker_acls(principal, topic, group))
    keys = [f"k{i}" for i in range(DOCUMENTS)]
    produce(admin["bootstrap.servers"], topic, [(key, json.dumps({"text": text}).encode())
                                                for key, text in zip(keys, news_docs, strict=False)],
            client_config=admin)

    worker = workers.start(kafka.listeners[listener], topic, group, *setup_flags(kafka, setup, tmp_path))
    result = reconcile(admin["bootstrap.servers"], topic, keys, timeout=90, client_config=admin, settle_s=1.0)

    assert result.lost(keys) == [], worker.log()
    assert sum(result.outputs.values()) == DOCUMENTS and result.duplicates() == 0
    assert worker.terminate() == 0, worker.log()
    plain_lines = [line for line in worker.log(tail=10**7).splitlines() if not line.startswith("{")]
    assert plain_lines == [], "client log lines outside the JSON log"


def start_once(kafka: ApacheKafka, tiny_bundle_dir: Path, bootstrap: str,
               *flags: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = run_worker_once("--topic", "anything", "--bootstrap-servers", bootstrap, "--model",
                             str(tiny_bundle_dir), *flags, timeout=60)
    return result, time.monotonic() - started


def the_one_line(result: subprocess.CompletedProcess, elapsed: float) -> str:
    """The start-up error, after checking that it is the only thing said besides the model's own events."""
    assert result.returncode == 2, result.stderr
    assert elapsed < START_UP_LIMIT_S
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    events = {json.loads(line)["event"] for line in lines if not line.startswith("Error:")}
    assert events <= {"model_self_test", "model_loaded"}, result.stderr
    return errors[0]


def test_wrong_password_is_one_line(kafka: ApacheKafka, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    secret = mounted_secret(tmp_path, kafka, password="not-" + kafka.users["worker"])
    line = the_one_line(*start_once(kafka, tiny_bundle_dir, kafka.listeners["SASL_SSL"],
                                    *sasl_flags(secret, "SCRAM-SHA-512")))
    # Refused with SCRAM's error, or by a closed connection (Apache Kafka does both): either way, named.
    assert "SASL authentication" in line and "--sasl-password-file" in line


def test_ca_that_did_not_sign_the_broker_is_one_line(kafka: ApacheKafka, tiny_bundle_dir: Path,
                                                     tmp_path: Path) -> None:
    secret = mounted_secret(tmp_path, kafka, ca=kafka.tls.other_ca_cert)
    line = the_one_line(*start_once(kafka, tiny_bundle_dir, kafka.listeners["SSL"], *tls_flags(secret)))
    assert "certificate cannot be verified" in line and "--ssl-cafile" in line


def test_certificate_for_another_host_is_one_line(kafka: ApacheKafka, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    line = the_one_line(*start_once(kafka, tiny_bundle_dir, kafka.listeners["SSL_WRONG_HOST"],
                                    *tls_flags(mounted_secret(tmp_path, kafka))))
    assert "not valid for this host" in line and "127.0.0.1" in line


def test_unreachable_listener_is_one_line(kafka: ApacheKafka, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    nothing_there = f"127.0.0.1:{free_port()}"
    line = the_one_line(*start_once(kafka, tiny_bundle_dir, nothing_there,
                                    *sasl_flags(mounted_secret(tmp_path, kafka), "SCRAM-SHA-512")))
    assert nothing_there in line and "connection refused" in line and "--bootstrap-servers" in line
