"""Which broker the integration and fault suites run on, and the markers that say what a test needs of it.

A pytest plugin (pyproject.toml loads it with ``-p``). ``LSTM_TEST_BROKER`` selects the broker: ``kafka``
(the default: Apache Kafka, started by :mod:`devtools.apache_kafka`) or ``tansu`` (the demo broker). A test
that takes the ``broker`` fixture runs on the selected one; marked ``tansu_smoke`` it also runs on Tansu, so
the broker of ``make demo`` and ``lstm-worker broker`` never breaks unnoticed. A test marked
``kafka_only(reason)`` needs a broker feature Tansu lacks: on Tansu it is deselected, and the summary lists
it with the reason (never a silent skip).
"""

from __future__ import annotations

import os

import pytest

from devtools.local_broker import KAFKA, TANSU, LocalBroker, running_broker

__all__ = ["Broker", "running_broker", "selected_broker"]

BROKER_VARIABLE = "LSTM_TEST_BROKER"
Broker = LocalBroker
# The fixtures that yield a broker (tests/integration/conftest.py, tests/faults/conftest.py).
BROKER_FIXTURES = ("broker", "own_broker")
_deselected = pytest.StashKey[list[tuple[str, str]]]()


def selected_broker() -> str:
    kind = os.environ.get(BROKER_VARIABLE, KAFKA).strip().lower() or KAFKA
    if kind not in (KAFKA, TANSU):
        raise pytest.UsageError(f"{BROKER_VARIABLE}={kind!r}: use {KAFKA} (Apache Kafka) or {TANSU}")
    return kind


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tansu_smoke: also runs on Tansu (the demo broker) when the suites use Kafka")
    config.addinivalue_line("markers", "kafka_only(reason): needs a broker feature Tansu lacks (reason says which)")
    config.stash[_deselected] = []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize a broker fixture (indirect, at the fixture's own scope) with the kinds the test runs on."""
    fixtures = [name for name in BROKER_FIXTURES if name in metafunc.fixturenames]
    if not fixtures:
        return
    kinds = [selected_broker()]
    if metafunc.definition.get_closest_marker("tansu_smoke") and TANSU not in kinds:
        kinds.append(TANSU)
    metafunc.parametrize(fixtures[0], kinds, indirect=True)


def kafka_only_reason(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("kafka_only")
    if marker is None:
        return None
    return marker.args[0] if marker.args else marker.kwargs["reason"]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if selected_broker() != TANSU:
        return
    kept, dropped = [], []
    for item in items:
        reason = kafka_only_reason(item)
        (kept if reason is None else dropped).append(item)
        if reason is not None:
            config.stash[_deselected].append((item.nodeid, reason))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # noqa: ANN001 - TerminalReporter
    deselected = config.stash[_deselected]
    if deselected:
        terminalreporter.section(f"not run on {TANSU}: the test needs a broker feature Tansu lacks", yellow=True)
        for nodeid, reason in deselected:
            terminalreporter.line(f"{nodeid}: {reason}")
