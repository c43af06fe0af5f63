"""What the images and manifests promise, run for real without Docker or a cluster.

- The worker image's install step (`pip install '.[worker]'` into a fresh venv, from the
  files its Dockerfile copies) yields a working, torch-free `lstm-worker`.
- A real worker started with the rendered Kubernetes settings (cpu overlay, PLAINTEXT to a
  local Tansu broker) passes the Dockerfile's own HEALTHCHECK command, turns ready on
  /readyz, and exits 0 on SIGTERM within the drain budget; the dev overlay's topic Job
  script creates the topics it needs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_manifests import TOOLS_PYTHON, render, worker_container, worker_settings

from tests.support.ports import free_port
from worker.devbroker import DevBroker

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "worker.Dockerfile"
VENV_BIN = Path(sys.executable).parent


def dockerfile_healthcheck() -> list[str]:
    """The exec-form CMD of the worker Dockerfile's HEALTHCHECK instruction."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, flags=re.MULTILINE)
    assert match, "worker.Dockerfile has an exec-form HEALTHCHECK"
    return json.loads(match.group(1))


def dockerfile_copied_sources() -> list[str]:
    """Paths the build stage copies from the context (COPY without --from)."""
    build_stage = DOCKERFILE.read_text(encoding="utf-8").split(" AS runtime")[0]
    sources: list[str] = []
    for line in build_stage.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    return [s.rstrip("/") for s in sources]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.integration
def test_worker_image_install_step_is_torch_free_and_runs(tmp_path: Path) -> None:
    context = tmp_path / "src"
    context.mkdir()
    sources = dockerfile_copied_sources()
    assert {"pyproject.toml", "core", "worker"} <= set(sources), sources
    for source in sources:
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, context / source)
    assert 'pip install ".[${EXTRAS}]"' in DOCKERFILE.read_text() and "ARG EXTRAS=worker\n" in DOCKERFILE.read_text()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", ".[worker]"], cwd=context,
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import importlib.util as u, worker.cli, onnxruntime, kafka, prometheus_client;"
         "print(u.find_spec('torch') is None)"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert probe.stdout.strip() == "True", probe.stderr
    help_text = subprocess.run([str(venv / "bin" / "lstm-worker"), "run", "--help"], capture_output=True,
                               text=True, timeout=120, cwd=tmp_path)
    assert help_text.returncode == 0 and "LSTM_WORKER_TOPIC" in help_text.stdout


@pytest.mark.integration
@pytest.mark.skipif(not TOOLS_PYTHON.exists(), reason="deploy tools venv absent: run deploy/validate.sh once")
def test_rendered_settings_run_a_worker_that_passes_the_image_healthcheck(tiny_bundle_dir: Path,
                                                                          tmp_path: Path) -> None:
    cpu = render("overlays/cpu")
    dev = render("overlays/dev")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTM_WORKER_")}
    env.update(worker_settings(cpu))
    metrics_port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    with DevBroker(port=free_port()) as broker:
        # The production settings, pointed at the local broker without SASL (no Secret here).
        env.update({
            "LSTM_WORKER_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "LSTM_WORKER_SECURITY_PROTOCOL": "PLAINTEXT",
            "LSTM_WORKER_SASL_MECHANISM": "",
            "LSTM_WORKER_SASL_PASSWORD_FILE": "",
            "LSTM_WORKER_MODEL": str(tiny_bundle_dir),
            "LSTM_WORKER_METRICS_PORT": str(metrics_port),
            "LSTM_WORKER_SESSION_TIMEOUT_MS": "6000",
            "HOME": str(home),
            "TMPDIR": str(home),
        })
        for key in [k for k, v in env.items() if k.startswith("LSTM_WORKER_") and v == ""]:
            del env[key]
        # The dev overlay's topic Job, run as written.
        job = next(o for o in dev if o["kind"] == "Job")
        job_container = job["spec"]["template"]["spec"]["containers"][0]
        script_env = {e["name"]: e["value"] for e in job_container.get("env", []) if "value" in e}
        created = subprocess.run(job_container["command"] + job_container.get("args", []),
                                 env={**env, **script_env, "PATH": f"{VENV_BIN}:{env.get('PATH', '')}"},
                                 capture_output=True, text=True, timeout=120)
        assert created.returncode == 0, created.stderr
        assert env["LSTM_WORKER_TOPIC"] in created.stdout

        worker = subprocess.Popen([str(VENV_BIN / "lstm-worker"), *worker_container(cpu)["args"]], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            healthcheck = dockerfile_healthcheck()
            assert healthcheck[0] == "python"
            check_env = {**env, "PATH": f"{VENV_BIN}:{env.get('PATH', '')}"}
            deadline = time.monotonic() + 90
            while True:
                status = subprocess.run(healthcheck, env=check_env, capture_output=True, timeout=30).returncode
                if status == 0:
                    break
                assert worker.poll() is None, f"worker exited: {worker.stdout.read() if worker.stdout else ''}"
                assert time.monotonic() < deadline, "the image HEALTHCHECK never passed"
                time.sleep(0.5)
            while http_status(f"http://127.0.0.1:{metrics_port}/readyz") != 200:
                assert worker.poll() is None, "worker exited before it was ready"
                assert time.monotonic() < deadline, "/readyz never turned 200"
                time.sleep(0.5)
            worker.send_signal(signal.SIGTERM)
            drain = float(env["LSTM_WORKER_SHUTDOWN_TIMEOUT_S"])
            assert worker.wait(timeout=drain + 10) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    # With the worker gone the same HEALTHCHECK must fail, or it proves nothing.
    assert subprocess.run(healthcheck, env=check_env, capture_output=True, timeout=30).returncode != 0


def test_training_image_installs_the_torch_version_pyproject_pins() -> None:
    """Run the train.Dockerfile's pin-extraction one-liner against the real pyproject.toml."""
    text = (ROOT / "deploy" / "docker" / "train.Dockerfile").read_text(encoding="utf-8")
    match = re.search(r"TORCH_PIN=\"\$\(python -c '(.+?)'\)\"", text)
    assert match, "train.Dockerfile reads the torch pin from pyproject.toml"
    pin = subprocess.run([sys.executable, "-c", match.group(1)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert pin.returncode == 0, pin.stderr
    import tomllib

    train_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    assert pin.stdout.strip() in train_extra and pin.stdout.strip().startswith("torch==")
    # The CPU build of that version comes from the CPU index; the rest of the extra from PyPI.
    assert 'pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_PIN}"' in text
    assert 'pip install ".[train]"' in text
