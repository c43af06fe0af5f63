"""One small HTTP server for /metrics (Prometheus), /healthz (liveness) and /readyz (readiness)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthState:
    """Written by the loop, read by the HTTP thread. Plain attributes: each is one atomic store."""

    def __init__(self, stale_after_s: float):
        self.stale_after_s = stale_after_s
        self.last_loop = time.monotonic()
        self.model_loaded = False
        self.assigned = 0
        self.stopping = False
        self.send_problem: str | None = None  # why sends are stuck, while the worker retries them
        # Why the worker cannot log in to the broker (an OAUTHBEARER token endpoint down), while it retries.
        self.credential_problem: Callable[[], str | None] = lambda: None

    def beat(self) -> None:
        self.last_loop = time.monotonic()

    def alive(self) -> tuple[bool, str]:
        age = time.monotonic() - self.last_loop
        if age > self.stale_after_s:
            return False, f"loop stalled: last iteration {age:.1f} s ago"
        return True, f"ok: last loop iteration {age:.2f} s ago"

    def ready(self) -> tuple[bool, str]:
        if not self.model_loaded:
            return False, "model bundle not loaded"
        if self.stopping:
            return False, "shutting down"
        if self.send_problem:
            return False, f"not producing: {self.send_problem}"
        if problem := self.credential_problem():
            return False, f"cannot authenticate: {problem}"
        if self.assigned == 0:
            return False, "no partitions assigned"
        return True, f"ok: {self.assigned} partitions assigned"


class HealthServer:
    def __init__(self, host: str, port: int, state: HealthState, registry: CollectorRegistry):
        self.state, self.registry = state, registry
        handler = self._handler_class()
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="health-http", daemon=True)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, message = outer.state.alive() if path == "/healthz" else outer.state.ready()
                    self._send(200 if ok else 503, (message + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # keep probes out of the logs
                return

        return Handler

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
