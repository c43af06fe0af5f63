"""One real Tansu broker per test session, and helpers to run `lstm-worker run` against it.

Every test uses its own topics and consumer group (``unique_name``), so tests
share the broker without seeing each other's records. The broker is always
killed at the end of the session, whatever happened.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from worker.devbroker import DevBroker, free_port

WORKER = str(Path(sys.executable).parent / "lstm-worker")
# Short session timeout: a group join waits about half of it (see TEAM.md).
SESSION_TIMEOUT_MS = "6000"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[DevBroker]:
    with DevBroker() as running:
        yield running


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A topic/group prefix no other test uses: test name + a nanosecond stamp."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"{base}-{time.time_ns()}"


@pytest.fixture(scope="session")
def news_docs(news_archive: Path) -> list[str]:
    """A few hundred real 20 Newsgroups test documents, read straight from the archive."""
    docs: list[str] = []
    with tarfile.open(news_archive) as tar:
        test_files = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("20news-bydate-test/")]
        # Every 20th file: a spread over all newsgroups, not the first group only.
        for member in test_files[::20][:400]:
            handle = tar.extractfile(member)
            assert handle is not None
            docs.append(handle.read().decode("latin-1"))
    return docs


def create_topics(bootstrap: str, names: list[str], partitions: int = 3) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        admin.close()


@dataclass
class WorkerProcess:
    """`lstm-worker run` as a subprocess, with its log kept in a file for failure messages."""

    process: subprocess.Popen
    log_path: Path
    metrics_port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"worker not ready within {timeout}s:\n{self.log()}")

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events

    def mapped_files(self) -> str:
        """The shared objects mapped into the worker process (torch would show as libtorch*)."""
        return Path(f"/proc/{self.process.pid}/maps").read_text()


@dataclass
class WorkerLauncher:
    bootstrap: str
    log_dir: Path
    bundle: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def start(self, topic: str, group: str, *extra: str) -> WorkerProcess:
        port = free_port()
        log_path = self.log_dir / f"worker-{len(self.started)}.log"
        command = [
            WORKER, "run", "--topic", topic, "--bootstrap-servers", self.bootstrap, "--group-id", group,
            "--model", str(self.bundle), "--metrics-port", str(port), "--session-timeout-ms", SESSION_TIMEOUT_MS,
            "--log-format", "json", "--threads", "1", *extra,
        ]
        with log_path.open("w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        worker = WorkerProcess(process, log_path, port)
        self.started.append(worker)
        return worker


@pytest.fixture
def workers(broker: DevBroker, tiny_bundle_dir: Path, tmp_path: Path) -> Iterator[WorkerLauncher]:
    """Starts workers; every one still running at the end of the test is killed."""
    launcher = WorkerLauncher(broker.bootstrap_servers, tmp_path, tiny_bundle_dir)
    yield launcher
    for worker in launcher.started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()

