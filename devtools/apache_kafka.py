"""A local Apache Kafka (KRaft, one node) that tests, benchmarks and developers start themselves.

``ApacheKafka`` fetches the pinned release (:mod:`devtools.kafka_jars`), makes a test CA and certificates
(:mod:`devtools.kafka_tls`), writes ``server.properties`` (:mod:`devtools.kafka_properties`), formats storage with
the SCRAM users, starts ``kafka.Kafka`` with a bounded heap and waits until a metadata request is answered. It
always stops the JVM: on leaving the ``with`` block, at interpreter exit, and (the kernel's doing) when the
Python process is killed. ``python -m devtools.apache_kafka`` (``make kafka``) runs one in the foreground.
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from devtools.kafka_jars import KAFKA_VERSION, KafkaToolError, classpath, require_tool
from devtools.kafka_properties import (
    ADMIN_USER,
    ALLOWED_URLS_PROPERTY,
    HOST,
    BrokerLayout,
    OAuthValidation,
    client_listeners,
    server_properties,
    write_log4j2,
    write_properties,
)
from devtools.kafka_tls import TestCertificates, make_test_certificates
from devtools.process_guard import die_with_parent_function, stop_group
from worker.devbroker import free_port

USERS = (ADMIN_USER, "worker", "keda")
HEAP = ("-Xms256m", "-Xmx512m")
STOP_GRACE_S = 20.0
_running: set[ApacheKafka] = set()


class ApacheKafka:
    """One Apache Kafka broker and controller on loopback, in ``workdir`` (a temporary directory if None)."""

    def __init__(self, workdir: Path | None = None, *, authorizer: bool = False,
                 oauth: OAuthValidation | None = None):
        """``oauth``: also a SASL_OAUTH listener whose tokens Kafka validates against that issuer's JWKS."""
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="apache-kafka-")) if workdir is None else Path(workdir)
        self.authorizer = authorizer
        self.oauth = oauth
        self.ports = {name: free_port(HOST)
                      for name in (*client_listeners(oauth is not None), "INTERNAL", "CONTROLLER")}
        self.users = {name: secrets.token_hex(12) for name in USERS}
        self._broker_password = secrets.token_hex(12)
        self.tls: TestCertificates | None = None
        self.process: subprocess.Popen | None = None
        self.log_file = self.workdir / "logs" / "server.log"

    # -- addresses and client settings ------------------------------------------------------------------------
    @property
    def listeners(self) -> dict[str, str]:
        return {name: f"{HOST}:{self.ports[name]}" for name in client_listeners(self.oauth is not None)}

    @property
    def bootstrap_servers(self) -> str:
        return self.listeners["PLAINTEXT"]

    def sasl_ssl_config(self, user: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """librdkafka settings of ``user`` over SASL_SSL (``mechanism``: SCRAM-SHA-512 or PLAIN)."""
        return {"bootstrap.servers": self.listeners["SASL_SSL"], "security.protocol": "SASL_SSL",
                "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": self.users[user],
                "ssl.ca.location": str(self.tls.ca_cert)}

    def admin_config(self) -> dict[str, str]:
        """librdkafka settings of a super user (``admin`` over SASL_SSL), allowed everything with the authorizer on."""
        return self.sasl_ssl_config(ADMIN_USER)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> ApacheKafka:
        """Format storage, start the JVM and wait until it answers a metadata request."""
        java = require_tool("java", "openjdk-17-jre-headless")
        jars = classpath()
        config_dir = self.workdir / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.tls = make_test_certificates(self.workdir / "tls")
        layout = BrokerLayout(ports=self.ports, data_dir=self.workdir / "data", log_dir=self.log_file.parent,
                              tls=self.tls, users=self.users, broker_password=self._broker_password,
                              authorizer=self.authorizer, oauth=self.oauth)
        properties = write_properties(config_dir / "server.properties", server_properties(layout))
        log4j = write_log4j2(config_dir / "log4j2.properties", self.log_file)
        allowed = [f"-D{ALLOWED_URLS_PROPERTY}={self.oauth.jwks_url}"] if self.oauth else []
        jvm = [java, *HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
               f"-Dkafka.logs.dir={self.log_file.parent}", *allowed, "-cp", jars]
        self._format(jvm, properties)
        output = (self.log_file.parent / "jvm.out").open("ab")
        with output:
            # Its own process group: a terminal's Ctrl-C reaches only us, and we stop the broker in order.
            self.process = subprocess.Popen([*jvm, "kafka.Kafka", str(properties)], stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=die_with_parent_function(os.getpid()))
        _running.add(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _format(self, jvm: list[str], properties: Path) -> None:
        # Never one that starts with "-": the tool's argument parser takes it for an option and fails the format.
        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        scram = [arg for name, password in self.users.items()
                 for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")]
        result = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "--standalone", "--cluster-id",
                                 cluster_id, "--config", str(properties), *scram],
                                capture_output=True, text=True, check=False,
                                preexec_fn=die_with_parent_function(os.getpid()))
        if result.returncode != 0:
            last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
            raise KafkaToolError(f"formatting Kafka storage failed: {last[0]}")

    def _wait_ready(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        quiet = logging.getLogger("devtools.apache_kafka.probe")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "logger": quiet})
        while True:
            if self.process.poll() is not None:
                raise KafkaToolError(f"Apache Kafka exited with code {self.process.returncode} before serving; "
                                     f"see {self.log_file}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaToolError(f"Apache Kafka did not answer a metadata request within {timeout:.0f} s; "
                                     f"see {self.log_file}")
            try:
                if admin.list_topics(timeout=min(1.0, remaining)).brokers:
                    return
            except Exception:  # noqa: BLE001 - KafkaException while the broker is still starting
                time.sleep(0.1)

    def stop(self) -> int | None:
        """SIGTERM the JVM's process group, SIGKILL it if it has not stopped in time; remove a temporary workdir."""
        process, self.process = self.process, None
        _running.discard(self)
        code = None
        if process is not None:
            code = stop_group(process.pid, STOP_GRACE_S, process.wait)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for kafka in list(_running):
        kafka.stop()


def describe(kafka: ApacheKafka) -> str:
    """What a user needs to connect: each listener, the TLS files, and where the passwords are."""
    tls = kafka.tls
    lines = [f"Apache Kafka {KAFKA_VERSION} (KRaft, one node) in {kafka.workdir}"]
    lines += [f"  {name:<19} {address}" for name, address in kafka.listeners.items()]
    lines += [f"  CA certificate      {tls.ca_cert}",
              f"  client certificate  {tls.client_cert}",
              f"  client key          {tls.client_key}",
              f"  users and passwords {kafka.workdir / 'users.txt'} (SASL_SSL: SCRAM-SHA-512 and PLAIN)",
              f"  broker log          {kafka.log_file}"]
    return "\n".join(lines)


def main() -> int:
    kafka = ApacheKafka(Path(tempfile.mkdtemp(prefix="lstm-worker-kafka-")))
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started where SIGINT is ignored (a background job)
        signal.signal(sig, _interrupt)
    try:
        started = time.monotonic()
        kafka.start()
        (kafka.workdir / "users.txt").write_text("".join(f"{u} {p}\n" for u, p in kafka.users.items()))
        print(describe(kafka), flush=True)
        print(f"ready in {time.monotonic() - started:.1f} s; Ctrl-C to stop (its files stay in {kafka.workdir})",
              flush=True)
        kafka.process.wait()
        print(f"error: Apache Kafka exited with code {kafka.process.returncode}; see {kafka.log_file}",
              file=sys.stderr)
        return 1
    except KafkaToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        kafka.stop()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
