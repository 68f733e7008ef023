"""Thin Prefect tasks of the incident runbook: each mitigation with its pre-condition and re-check, the
cleanup hook (a deployment run), the restart budget kept in the state store (one per container, whichever
check asks), the fresh probe that starts every run, and the per-check lock.

``incident_lock(check_id)`` holds the one slot of the global concurrency limit ``incident-<check_id>``: two
runs for one check (two downs, a respond and a resolve) take turns, while other checks' incidents proceed —
one 15-minute Docker cleanup wait never delays another check's incident.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import task
from prefect.cache_policies import NONE

from charhub_ops.errors import OpsError
from charhub_ops.monitoring import mitigate
from charhub_ops.monitoring.checks import CheckContext, run_check
from charhub_ops.monitoring.config import MonitorConfig
from charhub_ops.monitoring.incident_model import ActionResult
from charhub_ops.monitoring.store import MonitorState
from tasks.locks import resource_lock

__all__ = ["run_action", "cleanup_runner", "fresh_probe", "reprobe", "incident_lock"]


@contextmanager
def incident_lock(check_id: str) -> Iterator[None]:
    """Hold the one slot of ``incident-<check_id>`` (created when missing; waits as long as it takes)."""
    with resource_lock("incident", check_id):
        yield


def fresh_probe(check, ctx: CheckContext):
    """The check's probe judged alone (no earlier latencies or restart count), as a callable."""
    fresh = CheckContext(now=ctx.now, bearer_token=ctx.bearer_token, database_url=ctx.database_url,
                         open_repository=ctx.open_repository, secrets=ctx.secrets)
    return lambda: run_check(check, fresh)


@task(name="reprobe", cache_policy=NONE, task_run_name="reprobe-{check.id}")
def reprobe(check, ctx: CheckContext):
    """Probe the check once more before acting: the down event may be minutes old."""
    return fresh_probe(check, ctx)()


def cleanup_runner(cfg: MonitorConfig):
    """Runs the cleanup flow's deployment (``cleanup_deployment``) and waits for it; None when not configured."""
    if not cfg.cleanup_deployment:
        return None

    def run() -> str:
        from prefect.deployments import run_deployment

        flow_run = run_deployment(cfg.cleanup_deployment, parameters=cfg.cleanup_parameters, timeout=900)
        if not flow_run.state or not flow_run.state.is_completed():
            raise OpsError(f"deployment {cfg.cleanup_deployment}: run {flow_run.name} ended "
                           f"{flow_run.state.name if flow_run.state else 'without a state'}")
        return f"deployment {cfg.cleanup_deployment} ran ({flow_run.name})"
    return run


@task(name="mitigate", cache_policy=NONE, task_run_name="mitigate-{action}")
def run_action(action: str, check, cfg: MonitorConfig, store: MonitorState, ctx: CheckContext) -> ActionResult:
    """One allowed, enabled action: pre-condition, act, re-check. Engine or database errors are a failed
    action (reported), not a failed runbook: the incident still gets documented and escalated."""
    probe = fresh_probe(check, ctx)
    try:
        if action == "restart_container":
            budget = check.container or check.id  # one budget per container, whichever check restarts it
            result, restarts = mitigate.restart_action(check, store.restarts(budget), cfg.restart_budget_per_hour,
                                                       probe, cfg.recheck_seconds)
            store.save_restarts(budget, restarts)
            return result
        if action == "terminate_blockers":
            return mitigate.terminate_action(check, ctx.database_url, probe, min(cfg.recheck_seconds, 10.0))
        return mitigate.cleanup_action(cleanup_runner(cfg), probe, cfg.recheck_seconds)
    except OpsError as exc:
        return ActionResult(action=action, ok=False, ran=True, detail=f"failed: {exc}", at=mitigate._now())
