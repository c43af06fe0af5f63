"""Fixtures for the fault suite: brokers (one shared, or a fresh one for a test that freezes it) and real documents.

A broker JVM takes seconds to start, so tests that leave the broker alone share one per session (each uses
its own topics and group, ``unique_name``); a test that freezes the broker takes ``own_broker``, a fresh one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.brokers import Broker, running_broker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """One broker for the session's tests that do not freeze or kill it."""
    with running_broker(request.param) as running:
        yield running


@pytest.fixture
def own_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """A fresh broker for this test alone: it may freeze (SIGSTOP) or kill the broker's process."""
    with running_broker(request.param, tmp_path / "broker") as running:
        yield running


@pytest.fixture(scope="session")
def real_texts(news_data: str) -> list[str]:
    from training.data import load_dataset

    dataset = load_dataset(news_data, seed=0)
    texts = list(dataset.test_texts)
    random.Random(0).shuffle(texts)
    return texts
