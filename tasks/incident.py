"""Thin Prefect tasks of the incident runbook: each mitigation with its pre-condition and re-check, the
cleanup hook (a deployment run), the restart budget kept in the state store (one per container, whichever
check asks), the fresh probe that starts every run, the per-check lock, the diagnosis (with the recent flow
runs and the check's recent events from the server) and the report (file and markdown artifact).

``incident_lock(check_id)`` holds the one slot of the global concurrency limit ``incident-<check_id>``: two
runs for one check (two downs, a respond and a resolve) take turns, while other checks' incidents proceed —
one 15-minute Docker cleanup wait never delays another check's incident.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import FlowRunSort

from charhub_ops.errors import OpsError
from charhub_ops.monitoring import mitigate
from charhub_ops.monitoring.checks import CheckContext, run_check
from charhub_ops.monitoring.config import MonitorConfig
from charhub_ops.monitoring.diagnose import diagnose
from charhub_ops.monitoring.incident_model import ActionResult, Incident
from charhub_ops.monitoring.report import details_of, render_report, report_path, write_report
from charhub_ops.monitoring.state import CheckState
from charhub_ops.monitoring.store import MonitorState
from tasks.locks import resource_lock
from tasks.monitor import utcnow

__all__ = ["run_action", "cleanup_runner", "fresh_probe", "reprobe", "incident_lock", "diagnose_incident",
           "recent_flow_runs", "recent_check_events", "write_incident_report"]


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


@task(name="recent-flow-runs", cache_policy=NONE)
def recent_flow_runs(limit: int = 10) -> list[dict]:
    """The latest flow runs (deployments, migrations, backups): recent changes are the first suspect."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=limit)
        flows = {f.id: f.name for f in client.read_flows()}
    return [{"start": f"{r.start_time:%Y-%m-%d %H:%M:%S}" if r.start_time else "not started",
             "flow": flows.get(r.flow_id, "?"), "name": r.name, "state": r.state_name,
             "deployment": str(r.deployment_id) if r.deployment_id else None} for r in runs]


@task(name="recent-check-events", cache_policy=NONE)
def recent_check_events(check_id: str, limit: int = 15) -> list[dict]:
    """The latest events of ``charhub.check.<id>`` from the server, newest first (payloads are redacted)."""
    from prefect.events.filters import EventFilter, EventResourceFilter

    only = EventFilter(resource=EventResourceFilter(id=[f"charhub.check.{check_id}"]))
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=only, limit=limit)
    return [{"at": f"{e.occurred:%Y-%m-%d %H:%M:%S}", "event": e.event, "detail": str(e.payload.get("detail", ""))}
            for e in page.events]


@task(name="diagnose", cache_policy=NONE)
def diagnose_incident(check, state: CheckState, ctx: CheckContext, log_lines: int, runs: list[dict],
                      events: list[dict]) -> dict[str, str]:
    return diagnose(check, state, database_url=ctx.database_url, log_lines=log_lines, recent_runs=runs,
                    recent_events=events, secrets=ctx.secrets)


@task(name="write-incident-report", cache_policy=NONE)
def write_incident_report(incident_dir: str, inc: Incident, details: dict[str, str] | None) -> str:
    """The report file (atomically) and the same as a markdown artifact; on a rewrite without new details
    the previous diagnosis details are kept."""
    path = Path(inc.report) if inc.report else report_path(incident_dir, inc)
    text = "\n\n".join(f"### {title}\n\n{body}" for title, body in details.items()) if details else details_of(path)
    markdown = render_report(inc, utcnow(), text)
    write_report(path, markdown)
    create_markdown_artifact(markdown, key=f"incident-{inc.check_id.replace('_', '-')}",  # keys: no '_'
                             description=f"incident {inc.id}")
    return str(path)
