"""Thin Prefect tasks of the monitor flow: the state store on the Prefect server, the probe and its context.

State lives in Prefect Variables (charhub_ops.monitoring.variables.VariableStore, reached through Prefect's
own client) when a server is configured: monitor runs land on different workers, and the server is the one
place they all see. Setting ``monitor_state`` chooses, by the one rule of
``charhub_ops.monitoring.store.open_state`` (``auto`` without a server: the repository for the monitor
pass's own streaks, one error line for windows and incidents).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

from prefect import task
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from charhub_ops.monitoring import store
from charhub_ops.monitoring.checks import CheckContext, CheckResult, run_check
from charhub_ops.monitoring.runner import context_for
from charhub_ops.monitoring.state import CheckState
from charhub_ops.monitoring.store import MonitorState
from charhub_ops.settings import Settings

__all__ = ["open_state", "prefect_server", "check_context", "probe", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def prefect_server() -> bool:
    """A Prefect server is configured, by Prefect's own setting (loaded here)."""
    return bool(PREFECT_API_URL.value())


def open_state(settings: Settings, spec: str | None = None, shared: bool = True) -> MonitorState:
    """The store named by ``spec`` (default: setting monitor_state), by charhub_ops.monitoring.store.open_state,
    with Prefect's client for the Variables (``shared``: windows and incidents the workers must see)."""
    return store.open_state(settings, spec, prefect_server(), partial(get_client, sync_client=True), shared)


def _bearer(check) -> str | None:
    name = getattr(check, "bearer_secret", None)
    if not name:
        return None
    from prefect.blocks.system import Secret

    return Secret.load(name).get()


def check_context(check, settings: Settings, state: CheckState, now: datetime) -> CheckContext:
    """The probe's context, with the Bearer token read from its Prefect Secret block (never a parameter)."""
    return context_for(check, settings, state, now, _bearer(check))


@task(name="probe-check", cache_policy=NONE, task_run_name="probe-{check.id}")
def probe(check, ctx: CheckContext) -> CheckResult:
    return run_check(check, ctx)
