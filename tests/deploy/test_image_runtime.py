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

from tests.deploy.test_manifests import TOOLS_PYTHON, render, worker_container, worker_settings
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


def dockerfile_build_commands() -> list[str]:
    """The build stage's RUN commands after the venv exists (continuation lines joined)."""
    build_stage = DOCKERFILE.read_text(encoding="utf-8").split(" AS runtime")[0].replace("\\\n", " ")
    runs = [line[4:].strip() for line in build_stage.splitlines() if line.startswith("RUN ")]
    return [r for r in runs if "pip install" in r]


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
    # The Dockerfile's own install steps, as written (EXTRAS=worker): the hashed lock, then the project.
    commands = dockerfile_build_commands()
    assert len(commands) == 2 and "--require-hashes" in commands[0] and "--no-index" in commands[1], commands
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}", "EXTRAS": "worker",
           "VIRTUAL_ENV": str(venv), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for command in commands:
        # python -c one-liners stay as written; only the heavy import check needs the venv's python.
        install = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=context, env=env,
                                 capture_output=True, text=True, timeout=900)
        assert install.returncode == 0, f"{command}\n{install.stdout[-2000:]}\n{install.stderr[-3000:]}"
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
    """The train lock pins the CPU build of pyproject's torch, hashed; the Dockerfile installs that lock."""
    import tomllib

    train_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    pin = next(r for r in train_extra if r.startswith("torch=="))
    lock = (ROOT / "deploy" / "requirements" / "train.txt").read_text(encoding="utf-8")
    match = re.search(r"^torch==(\S+) \\\n\s+--hash=sha256:([0-9a-f]{64})", lock, flags=re.MULTILINE)
    assert match, "train.txt pins torch with a hash"
    assert match.group(1) == pin.split("==", 1)[1] + "+cpu"
    text = (ROOT / "deploy" / "docker" / "train.Dockerfile").read_text(encoding="utf-8")
    assert re.search(r'pip install --require-hashes --no-deps --extra-index-url "\$\{TORCH_INDEX_URL\}" '
                     r"-r deploy/requirements/train.txt", text)
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text


LOCKFILES = ROOT / "deploy" / "lockfiles.py"


def lock_tree(tmp_path: Path) -> Path:
    """A copy of what deploy/lockfiles.py reads: pyproject.toml, the locks and the Dockerfiles."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "deploy", root / "deploy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def check_locks(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / "deploy" / "lockfiles.py"), "check"], capture_output=True,
                          text=True, timeout=60)


def test_lock_files_are_current_hashed_and_used() -> None:
    result = subprocess.run([sys.executable, str(LOCKFILES), "check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    for name in ("worker", "worker-broker", "worker-gpu", "train"):
        text = (ROOT / "deploy" / "requirements" / f"{name}.txt").read_text(encoding="utf-8")
        assert "python 3.11, x86_64-manylinux_2_28" in text
    gpu = (ROOT / "deploy" / "requirements" / "worker-gpu.txt").read_text(encoding="utf-8")
    assert re.search(r"^onnxruntime-gpu==", gpu, flags=re.MULTILINE)
    assert not re.search(r"^onnxruntime==", gpu, flags=re.MULTILINE), "never both onnxruntime builds"


@pytest.mark.parametrize("case, message", [
    ("pyproject-changed", "is not what pyproject.toml gives now"),
    ("hash-removed", "is not pinned with sha256 hashes"),
    ("unlocked-install", "installs without --require-hashes"),
])
def test_lock_check_refuses(tmp_path: Path, case: str, message: str) -> None:
    root = lock_tree(tmp_path)
    assert check_locks(root).returncode == 0
    if case == "pyproject-changed":
        path = root / "pyproject.toml"
        text = path.read_text()
        path.write_text(text.replace('"prometheus-client>=0.20",', '"prometheus-client>=0.20",\n    "rich",'))
    elif case == "hash-removed":
        path = root / "deploy" / "requirements" / "worker.txt"
        path.write_text(re.sub(r"(click==\S+) \\\n(\s+--hash=\S+ \\?\n)+", r"\1\n", path.read_text()))
    else:
        path = root / "deploy" / "docker" / "worker.Dockerfile"
        project = "pip install --no-deps --no-build-isolation --no-index ."
        path.write_text(path.read_text().replace(f"RUN {project}", f"RUN pip install requests && {project}"))
    result = check_locks(root)
    assert result.returncode == 1 and message in result.stdout, result.stdout
