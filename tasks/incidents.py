"""Thin Prefect tasks of the incident runbook: each mitigation with its pre-condition and re-check, the
cleanup hook (a deployment run), and the restart budget kept in the state store."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from charhub_ops.errors import OpsError
from charhub_ops.monitoring import mitigate
from charhub_ops.monitoring.checks import CheckContext, run_check
from charhub_ops.monitoring.config import MonitorConfig
from charhub_ops.monitoring.incidents import ActionResult
from charhub_ops.monitoring.store import MonitorState

__all__ = ["run_action", "cleanup_runner"]


def _probe(check, ctx: CheckContext):
    fresh = CheckContext(now=ctx.now, bearer_token=ctx.bearer_token, database_url=ctx.database_url,
                         open_repository=ctx.open_repository, secrets=ctx.secrets)  # judged alone, no old latencies
    return lambda: run_check(check, fresh)


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
    probe = _probe(check, ctx)
    try:
        if action == "restart_container":
            result, restarts = mitigate.restart_action(check, store.restarts(check.id), cfg.restart_budget_per_hour,
                                                       probe, cfg.recheck_seconds)
            store.save_restarts(check.id, restarts)
            return result
        if action == "terminate_blockers":
            return mitigate.terminate_action(check, ctx.database_url, probe, min(cfg.recheck_seconds, 10.0))
        return mitigate.cleanup_action(cleanup_runner(cfg), probe, cfg.recheck_seconds)
    except OpsError as exc:
        return ActionResult(action=action, ok=False, ran=True, detail=f"failed: {exc}", at=mitigate._now())
