"""One real Tansu broker per test session, and real documents.

Every test uses its own topics and consumer group (``unique_name``), so tests
share the broker without seeing each other's records. The broker is always
killed at the end of the session, whatever happened.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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
def news_docs(news_archive: Path) -> list[str]:
    """A few hundred real 20 Newsgroups test documents, read straight from the archive."""
    docs: list[str] = []
    with tarfile.open(news_archive) as tar:
        test_files = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("20news-bydate-test/")]
        # Every 20th file: a spread over all newsgroups, not the first group only.
        for member in test_files[::20][:400]:
            handle = tar.extractfile(member)
            assert handle is not None
            docs.append(handle.read().decode("latin-1"))
    return docs
