"""The liveness probe through the real HTTP server, and per-host slots through real file locks."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry

from worker.health import HealthServer, HealthState
from worker.host_slot import claim_host_slot


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_healthz_fails_once_the_loop_stops_coming_round_and_recovers_when_it_does() -> None:
    state = HealthState(stale_after_s=0.3)
    server = HealthServer("127.0.0.1", 0, state, CollectorRegistry()).start()
    try:
        state.beat()
        assert get(server.port, "/healthz")[0] == 200
        time.sleep(0.5)  # the loop is stuck: no beat
        status, body = get(server.port, "/healthz")
        assert status == 503 and "loop stalled" in body
        state.beat()
        assert get(server.port, "/healthz")[0] == 200
        assert get(server.port, "/readyz") == (503, "model bundle not loaded\n")
    finally:
        server.stop()


def test_workers_on_one_host_get_distinct_slots_and_a_dead_ones_slot_is_reused(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from worker.host_slot import claim_host_slot; "
                               f"print(claim_host_slot('g', {str(tmp_path)!r}), flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert holder.stdout.readline().strip() == "0"  # the first worker on this host
        assert claim_host_slot("g", str(tmp_path)) == 1  # a second one, while the first lives
        assert claim_host_slot("other-group", str(tmp_path)) == 0  # slots are per group
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the dead worker's lock: a restarted worker takes slot 0 again.
    assert claim_host_slot("g", str(tmp_path)) == 0


def test_no_writable_directory_means_no_slot(tmp_path: Path) -> None:
    assert claim_host_slot("g", str(tmp_path / "missing")) is None
