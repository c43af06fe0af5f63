"""Fixtures shared by every test package: real data, a tiny real model, its bundle, workers, delivery modes.

The tiny model is trained once per session on a sample of the real 20
Newsgroups (:mod:`tests.support.datasets` says where it comes from) through
the real ``lstm-train`` CLI, and exported through the real ``lstm-export``
CLI, so every downstream test exercises the contract end to end. Helpers live
in :mod:`tests.support`; this file only holds fixtures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.datasets import news_source, problems, sms_source
from tests.support.model import TINY_TRAIN_ARGS, run_cli
from tests.support.workers import MODES, WorkerPool


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: only what will run counts
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Stop at once, with one line saying what to set, when a selected test needs data that is not here."""
    needed = {name for item in items for name in getattr(item, "fixturenames", ())}
    missing = problems(news="news_data" in needed, sms="sms_data" in needed)
    if missing:
        pytest.exit("; ".join(missing), returncode=2)


@pytest.fixture(scope="session")
def news_data() -> str:
    """20 Newsgroups as ``--data`` takes it: a local archive's path, or '20newsgroups' (scikit-learn's download)."""
    source = news_source()
    assert source.location, source.problem  # unreachable: the collection hook stopped the session
    return source.location


@pytest.fixture(scope="session")
def sms_data() -> str:
    """The SMS Spam Collection file (label<TAB>text, no header): ``SMS_DATA``, beside the repository or downloaded."""
    source = sms_source()
    assert source.location, source.problem  # unreachable: the collection hook stopped the session
    return source.location


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(news_data: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-train")
    result = run_cli("lstm-train", "--data", news_data, "--output", str(out), *TINY_TRAIN_ARGS)
    assert result.returncode == 0, f"lstm-train failed:\n{result.stdout}\n{result.stderr}"
    return out


@pytest.fixture(scope="session")
def tiny_bundle_dir(tiny_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-bundle") / "bundle"
    result = run_cli("lstm-export", "--checkpoint", str(tiny_checkpoint_dir), "--output", str(out))
    assert result.returncode == 0, f"lstm-export failed:\n{result.stdout}\n{result.stderr}"
    return out


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A topic/group prefix no other test uses: test name + a nanosecond stamp."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"{base}-{time.time_ns()}"


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """The delivery mode: a test that takes it runs at least once and with --exactly-once."""
    return request.param


@pytest.fixture
def workers(tiny_bundle_dir: Path, tmp_path: Path) -> Iterator[WorkerPool]:
    """Starts workers (``workers.start(bootstrap, topic, group, *extra)``); all still running at the end are killed."""
    pool = WorkerPool(tiny_bundle_dir, tmp_path)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def two_version_store(tiny_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A model store with versions 1 (CURRENT) and 2 of the tiny model, exported by the real ``lstm-export``;
    with the second export's output. Tests copy it before they change it."""
    store = tmp_path_factory.mktemp("store") / "models"
    for version in ("1", "2"):
        result = run_cli("lstm-export", "--checkpoint", str(tiny_checkpoint_dir), "--store", str(store),
                         "--version", version, "--name", "tiny")
        assert result.returncode == 0, result.stdout + result.stderr
    return store, result.stdout
