"""Suite-wide rules. With HSM_FORBID_SKIPS set (CI runs as root), a skipped test fails the run."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.testbed.fixtures"]

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("HSM_FORBID_SKIPS") and _skipped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"HSM_FORBID_SKIPS: {len(_skipped)} test(s) skipped; in CI every test must run:",
                red=True,
            )
            for nodeid in _skipped:
                reporter.write_line(f"  {nodeid}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
