"""pytest plugin: under CI (``CI`` set, as ``.ci/run`` does) a skipped test fails the run.

CI provides every service (PostgreSQL, the S3 server, the Docker engine, restic), so a skip there
means a broken harness, not a missing tool; locally a skip stays a skip with its reason.
"""

from __future__ import annotations

import os

import pytest

_SKIPPED: list[str] = []


def pytest_runtest_logreport(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus) -> None:
    if os.environ.get("CI") and _SKIPPED:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"CI: {len(_SKIPPED)} test(s) skipped, which CI does not allow: "
                                + ", ".join(_SKIPPED[:10]), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
