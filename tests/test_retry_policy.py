"""Retry policy: only errors that say they are transient are retried, as many times as the setting says.

Before: anything not listed as permanent was retried (a TypeError, a missing container, a full disk), and the
decorators hard-coded 1 or 2 retries whatever CHARHUB_OPS_TASK_RETRIES said.
"""

from __future__ import annotations

import errno
import glob
import re
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.cache_policies import NONE

from charhub_ops.errors import DatabaseError, DockerError, OpsError, StorageError, VerificationError
from tasks.common import MAX_RETRIES, RETRY, RETRY_DELAYS, is_transient

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("exc", "transient"), [
    (StorageError("s3: put x: 503: SlowDown", transient=True), True),
    (DatabaseError("postgres: could not serialize access", transient=True), True),
    (StorageError("local: put x: No space left on device"), False),
    (DockerError("docker: container 'pg' not found (setting docker_container)"), False),
    (VerificationError("checksum mismatch"), False),
    (OpsError("anything"), False),
    (TypeError("unsupported operand"), False),
    (OSError(errno.ENOSPC, "No space left on device"), False),
    (ConnectionError("raw, untranslated"), False),
])
def test_only_errors_that_say_so_are_transient(exc, transient):
    assert is_transient(exc) is transient


def test_delays_follow_the_setting(monkeypatch):
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRY_DELAY", "2")
    assert [RETRY_DELAYS[i] for i in range(3)] == [2, 8, 20]
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRY_DELAY", "0")
    assert RETRY_DELAYS[0] == 0


def test_no_task_hard_codes_its_retries():
    """Every retrying task takes the one policy (the setting decides), none its own count."""
    for path in glob.glob(str(ROOT / "tasks" / "*.py")) + glob.glob(str(ROOT / "flows" / "*.py")):
        text = Path(path).read_text()
        assert not re.search(r"@task\([^)]*\bretries=\d", text, re.S), path


def _run(calls: list[str], errors: list[BaseException]) -> str:
    @task(name="flaky", cache_policy=NONE, **RETRY)
    def flaky() -> str:
        calls.append("call")
        if errors:
            raise errors.pop(0)
        return "done"

    @flow(name="retry-policy")
    def run() -> str:
        return flaky()

    return run()


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_transient_errors_are_retried_as_often_as_the_setting_says(prefect_server, monkeypatch, retries):
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRIES", str(retries))
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRY_DELAY", "0")
    calls: list[str] = []
    errors = [StorageError("s3: get x: 503", transient=True) for _ in range(MAX_RETRIES + 1)]
    with pytest.raises(StorageError):
        _run(calls, errors)
    assert len(calls) == retries + 1


def test_a_transient_error_then_success(prefect_server, monkeypatch):
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRIES", "2")
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRY_DELAY", "0")
    calls: list[str] = []
    assert _run(calls, [DatabaseError("postgres: deadlock detected", transient=True)]) == "done"
    assert len(calls) == 2


@pytest.mark.parametrize("error", [TypeError("bug"), OSError(errno.ENOSPC, "No space left on device"),
                                   DockerError("docker: container 'x' not found"), VerificationError("bad")])
def test_permanent_errors_fail_at_once(prefect_server, monkeypatch, error):
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRIES", "3")
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRY_DELAY", "0")
    calls: list[str] = []
    with pytest.raises(type(error)):
        _run(calls, [error])
    assert calls == ["call"]
