"""Fixtures shared by every test package: real data, a tiny real model, its bundle, workers, delivery modes.

The tiny model is trained once per session on a sample of the real 20
Newsgroups archive through the real ``lstm-train`` CLI, and exported through
the real ``lstm-export`` CLI, so every downstream test exercises the contract
end to end. Helpers live in :mod:`tests.support`; this file only holds fixtures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.model import TINY_TRAIN_ARGS, find_news_archive, run_cli
from tests.support.schema_broker import SchemaBroker
from tests.support.workers import MODES, WorkerPool


@pytest.fixture(scope="session")
def news_archive() -> Path:
    """The real 20 Newsgroups bydate archive (LSTM_TRAIN_DATA or ../shared/data)."""
    archive = find_news_archive()
    if archive is None:
        message = "20 Newsgroups archive not found: set LSTM_TRAIN_DATA to 20news-bydate.tar.gz"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return archive


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(news_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-train")
    result = run_cli("lstm-train", "--data", str(news_archive), "--output", str(out), *TINY_TRAIN_ARGS)
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


@pytest.fixture
def schema_broker(tmp_path: Path) -> Iterator[SchemaBroker]:
    """A fresh Tansu with a file schema registry: ``reject_records(topic)`` makes a topic refuse every record."""
    with SchemaBroker(tmp_path / "broker") as running:
        yield running


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
