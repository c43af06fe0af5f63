"""Fixtures for the fault suite: a fresh broker per test (some tests freeze it) and real documents."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from worker.devbroker import DevBroker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def broker() -> Iterator[DevBroker]:
    with DevBroker() as running:
        yield running


@pytest.fixture(scope="session")
def real_texts(news_data: str) -> list[str]:
    from training.data import load_dataset

    dataset = load_dataset(news_data, seed=0)
    texts = list(dataset.test_texts)
    random.Random(0).shuffle(texts)
    return texts
