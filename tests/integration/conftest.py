"""One real broker per test session (Apache Kafka unless LSTM_TEST_BROKER=tansu), and real documents.

Every test uses its own topics and consumer group (``unique_name``), so tests share the broker without
seeing each other's records; a test that breaks the broker for others takes ``own_broker``. Brokers are
always stopped at the end, whatever happened.
Tests marked ``tansu_smoke`` run on Tansu as well (:mod:`tests.support.brokers`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.brokers import Broker, running_broker
from training.data import read_source


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The session's broker of the kind the test is parametrized with (see tests.support.brokers)."""
    with running_broker(request.param) as running:
        yield running


@pytest.fixture
def own_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """A fresh broker for this test alone: its faults (a topic refusing writes, which leaves an exactly-once
    worker's transaction pending on Kafka for good) must not reach the tests sharing the session's broker."""
    with running_broker(request.param, tmp_path / "broker") as running:
        yield running


@pytest.fixture(scope="session")
def news_docs(news_data: str) -> list[str]:
    """Every 20th real 20 Newsgroups test document (377, all groups), as lstm-train reads them (headers kept)."""
    return read_source(news_data)["test"].texts[::20]
