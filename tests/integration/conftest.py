"""One real Tansu broker per test session, and real documents.

Every test uses its own topics and consumer group (``unique_name``), so tests
share the broker without seeing each other's records. The broker is always
killed at the end of the session, whatever happened.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from training.data import read_source
from worker.devbroker import DevBroker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[DevBroker]:
    with DevBroker() as running:
        yield running


@pytest.fixture(scope="session")
def news_docs(news_data: str) -> list[str]:
    """Every 20th real 20 Newsgroups test document (377, all groups), as lstm-train reads them (headers kept)."""
    return read_source(news_data)["test"].texts[::20]
