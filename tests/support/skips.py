"""The skips a test run may have: only for a reason the user cannot fix on this machine.

A pytest plugin (pyproject.toml loads it with ``-p``). ``make test`` and ``make faults`` pass
``--only-listed-skips``: a skip whose reason is not listed here fails the run, so a green run never
hides an untested path (a missing data set, tool or broker feature is an error to fix, not a skip).
docs/testing.md lists the same reasons.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

# Reason (as the test's pytest.skip gives it) -> why nobody can fix it on the machine that ran the tests.
ALLOWED = {
    "a GPU is present": "the --device cuda error path of lstm-train needs a machine without CUDA",
    "this machine has CUDA": "the --provider cuda error path of the worker needs a machine without CUDA",
}


def reason(report: pytest.TestReport) -> str:
    """A skipped report's reason, without pytest's ``Skipped: `` prefix."""
    text = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return text.removeprefix("Skipped: ")


def unlisted(reports: Iterable[pytest.TestReport]) -> list[str]:
    """``test id: reason`` for each skip whose reason is not on the allow-list."""
    return [f"{r.nodeid}: {reason(r)}" for r in reports if r.skipped and reason(r) not in ALLOWED]


class SkipGuard:
    """A pytest plugin: remembers every skip and fails the session on one that is not on the allow-list."""

    def __init__(self) -> None:
        self.skipped: list[pytest.TestReport] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.append(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if unlisted(self.skipped) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:  # noqa: ANN001 - pytest's TerminalReporter
        found = unlisted(self.skipped)
        if found:
            terminalreporter.section("skips not on the allow-list (tests/support/skips.py)", red=True)
            for line in found:
                terminalreporter.line(line)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--only-listed-skips", action="store_true",
                     help="fail the run when a test skips for a reason not listed in tests/support/skips.py "
                          "(make test and make faults pass it)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--only-listed-skips"):
        config.pluginmanager.register(SkipGuard(), "only-listed-skips")
