"""``lstm-worker run`` as a real process, the two delivery modes, and process faults (signals, freezes).

Each :class:`WorkerProcess` keeps one log file across its restarts (JSON lines), so a test can read
every event it logged; :class:`WorkerPool` (the ``workers`` fixture) kills whatever is still running
at the end of a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port

WORKER = str(Path(sys.executable).parent / "lstm-worker")
# Short session timeout: a group join on Tansu waits about half of it.
SESSION_TIMEOUT_MS = 6000

# The two delivery strategies every behaviour test runs against (the ``mode`` fixture).
AT_LEAST_ONCE, EXACTLY_ONCE = "at-least-once", "exactly-once"
MODES = (AT_LEAST_ONCE, EXACTLY_ONCE)


def mode_flags(mode: str) -> tuple[str, ...]:
    """The ``lstm-worker run`` options of a delivery mode."""
    return {AT_LEAST_ONCE: (), EXACTLY_ONCE: ("--exactly-once",)}[mode]


def replica_flags(mode: str, group: str, index: int) -> tuple[str, ...]:
    """Options of replica ``index`` of ``group``: the mode's, and its own transactional id with --exactly-once."""
    if mode == EXACTLY_ONCE:
        return (*mode_flags(mode), "--transactional-id", f"{group}-{index}")
    return mode_flags(mode)


@dataclass
class WorkerProcess:
    """One worker replica: started with :meth:`start`, restartable, with its log kept in ``log_path``."""

    bootstrap: str
    topic: str
    group: str
    bundle: Path
    log_path: Path
    extra: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    metrics_port: int = 0
    starts: int = 0
    exits: list[int] = field(default_factory=list)

    def command(self) -> list[str]:
        return [WORKER, "run", "--topic", self.topic, "--bootstrap-servers", self.bootstrap,
                "--group-id", self.group, "--model", str(self.bundle), "--metrics-port", str(self.metrics_port),
                "--session-timeout-ms", str(SESSION_TIMEOUT_MS), "--log-format", "json", "--threads", "1",
                *self.extra]

    def start(self) -> WorkerProcess:
        """Start (or restart) the process on a new metrics port; its output is appended to ``log_path``."""
        assert not self.alive(), "start() on a running worker"
        self.metrics_port = free_port()
        self.starts += 1
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        return self

    # -- HTTP endpoints -------------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def get(self, path: str, timeout: float = 5) -> tuple[int, str]:
        """(status, body) of /metrics, /healthz or /readyz; raises OSError when nothing answers."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def status(self, path: str, timeout: float = 2) -> int:
        """HTTP status of ``path``, 0 when nothing answered."""
        try:
            return self.get(path, timeout)[0]
        except OSError:
            return 0

    def wait_ready(self, timeout: float = 90) -> None:
        """Until /readyz answers 200 (model loaded, partitions assigned); fails if the process exits."""
        self._wait_status("/readyz", timeout)

    def wait_healthy(self, timeout: float = 90) -> None:
        """Until /healthz answers 200 (the loop runs; partitions may not be assigned yet)."""
        self._wait_status("/healthz", timeout)

    def _wait_status(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"worker exited with {self.process.poll()}:\n{self.log()}")
            if self.status(path, 1) == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"{path} not 200 within {timeout:.0f}s:\n{self.log()}")

    # -- process control -------------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send_signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit code, once the process has exited (recorded in ``exits``)."""
        assert self.process is not None
        code = self.process.wait(timeout)
        self.exits.append(code)
        return code

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM (drain, then exit); returns the exit code."""
        self.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        self.wait(30)

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a frozen process dies on SIGKILL too; be explicit
            self.process.kill()
            self.process.wait()

    # -- what it said ----------------------------------------------------------------------------------------
    def log(self, tail: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def log_events(self) -> list[dict]:
        """Every JSON log line of every start of this worker, in order."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def events(self, name: str) -> list[dict]:
        return [e for e in self.log_events() if e.get("event") == name]

    def mapped_files(self) -> str:
        """The shared objects mapped into the worker process (torch would show as libtorch*)."""
        return Path(f"/proc/{self.process.pid}/maps").read_text()


@dataclass
class WorkerPool:
    """Creates workers for a test (the ``workers`` fixture); :meth:`close` kills those still running."""

    bundle: Path
    log_dir: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def new(self, bootstrap: str, topic: str, group: str, *extra: str) -> WorkerProcess:
        """A worker not started yet (call ``.start()``)."""
        worker = WorkerProcess(bootstrap, topic, group, self.bundle,
                               self.log_dir / f"worker-{len(self.started)}.log", tuple(extra))
        self.started.append(worker)
        return worker

    def start(self, bootstrap: str, topic: str, group: str, *extra: str) -> WorkerProcess:
        """Start ``lstm-worker run`` on ``topic`` in ``group`` with the test defaults plus ``extra``."""
        return self.new(bootstrap, topic, group, *extra).start()

    def start_group(self, bootstrap: str, topic: str, group: str, count: int, *extra: str,
                    mode: str = AT_LEAST_ONCE) -> list[WorkerProcess]:
        """``count`` replicas of one group in ``mode``, each healthy before this returns.

        With --exactly-once each replica gets its own ``--transactional-id <group>-<n>`` (as a StatefulSet
        gives each pod its own name), kept across its restarts so that a restart fences its predecessor.
        """
        new = [self.start(bootstrap, topic, group, *replica_flags(mode, group, i), *extra) for i in range(count)]
        for worker in new:
            worker.wait_healthy()
        return new

    def close(self) -> None:
        for worker in self.started:
            worker.cleanup()


def run_worker_once(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``lstm-worker run ARGS`` to completion (start-up errors), output captured."""
    return subprocess.run([WORKER, "run", "--session-timeout-ms", str(SESSION_TIMEOUT_MS), "--log-format", "json",
                           *args], capture_output=True, text=True, timeout=timeout)


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP ``pid`` for the block; it is always resumed (SIGCONT), even if the test fails."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def freeze(pid: int, seconds: float) -> None:
    """SIGSTOP ``pid`` for ``seconds``, then SIGCONT."""
    with frozen(pid):
        time.sleep(seconds)


def kill_in_turn(group: list[WorkerProcess], kills: int, every_s: float) -> None:
    """SIGKILL the group's workers in turn, ``every_s`` apart, restarting each at once (as Kubernetes would)."""
    for kill in range(kills):
        time.sleep(every_s)
        victim = group[kill % len(group)]
        victim.kill()
        victim.start()


def in_background(target: Callable, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def wait_until(condition: Callable[[], object], timeout: float, what: str, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every_s)
