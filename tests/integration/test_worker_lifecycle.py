"""Start-up failures name their fix in one line; `lstm-worker broker` runs and stops a real broker."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.support.kafka import create_topics
from tests.support.ports import free_port, port_accepts
from tests.support.workers import WORKER
from tests.support.workers import run_worker_once as run_worker
from worker.devbroker import DevBroker


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def test_missing_input_topic_is_one_clear_line(broker: DevBroker, tiny_bundle_dir: Path, unique_name: str) -> None:
    result = run_worker("--topic", unique_name, "--bootstrap-servers", broker.bootstrap_servers,
                        "--model", str(tiny_bundle_dir))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = error_lines(result)
    assert unique_name in line and "does not exist" in line and f"lstm-worker topics create {unique_name}" in line


def test_tampered_bundle_is_refused(broker: DevBroker, tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, bundle)
    labels = bundle / "labels.json"
    labels.write_text(labels.read_text().replace('"', "'", 1))  # same size, different bytes
    result = run_worker("--topic", "whatever", "--bootstrap-servers", broker.bootstrap_servers,
                        "--model", str(bundle))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = error_lines(result)
    assert "--model" in line and "labels.json" in line


def test_unreachable_broker_names_the_fix(tiny_bundle_dir: Path) -> None:
    nothing_there = f"127.0.0.1:{free_port()}"
    result = run_worker("--topic", "t", "--bootstrap-servers", nothing_there, "--model", str(tiny_bundle_dir))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = error_lines(result)
    assert nothing_there in line and "--bootstrap-servers" in line


def test_broker_command_serves_kafka_and_stops_on_sigterm(unique_name: str) -> None:
    port = free_port()
    process = subprocess.Popen([WORKER, "broker", "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not port_accepts("127.0.0.1", port) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        create_topics(f"127.0.0.1:{port}", [unique_name], partitions=2)
        metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(unique_name, timeout=30)
        assert set(metadata.topics[unique_name].partitions) == {0, 1}

        second = subprocess.run([WORKER, "broker", "--port", str(port)], capture_output=True, text=True,
                                timeout=30)
        assert second.returncode != 0 and "already in use" in second.stderr

        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert not port_accepts("127.0.0.1", port)  # the Tansu child went with it
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cuda_without_cuda_is_a_clear_start_up_error(broker: DevBroker, tiny_bundle_dir: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA: the error path cannot be exercised")
    result = run_worker("--topic", "t", "--bootstrap-servers", broker.bootstrap_servers,
                        "--model", str(tiny_bundle_dir), "--provider", "cuda")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = error_lines(result)
    assert "cuda" in line and "--provider cpu" in line
