"""Incident response: re-probe → detect → diagnose → mitigate → escalate → document → notify; and resolve.

``incident_respond_flow`` is what the ``incident-respond`` deployment runs on ``charhub.service.down`` (and
``backup-overdue`` on the proactive dead-man trigger). Every run holds the check's own lock (global
concurrency limit ``incident-<check_id>``, one slot): runs of one check take turns, other checks proceed.

0. **Re-probe** first: the down event may be minutes old (a run queued behind another, a worker that was
   away). A check that passes now opens nothing (and attaches nothing).
1. One open incident per check id: a second ``down`` attaches to the open one (Keep's one_until_resolved),
   runs nothing again, and notifies once with the new detail.
2. **Diagnose** (task): container status and last log lines, pg_stat_activity (our own sessions marked),
   blocking chains, long queries, disk, the check's recent probes, recent flow runs from the Prefect API;
   every secret redacted.
3. **Mitigate** (a task per action): only what the runbook for the check type allows *and* the config enables,
   each with a pre-condition and a re-check; disabled or over-budget actions are reported, not run.
4. **Escalate** when no action brought the check back: the incident stays open and names who must act.
5. **Document** (task): the report file in CharHub's template, written atomically, and a markdown artifact.
6. **Notify** (task): opened (with severity), mitigated or escalated — through the notification block.

``incident_resolve_flow`` runs on ``charhub.service.recovered`` (and, for ``backup-overdue``, on the next
``charhub.backup.completed``): closes the incident, completes its timeline and duration, rewrites the
report, notifies.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

from charhub_ops.monitoring.config import BackupsCheck, load_config
from charhub_ops.monitoring.diagnose import summary_lines
from charhub_ops.monitoring.incident_model import RESPONSE_TARGET, add, attach, new_incident, record_action, resolve
from charhub_ops.monitoring.mitigate import planned_actions
from charhub_ops.monitoring.windows import active_windows
from flows.params import CONFIG_HELP, STATE_HELP, CheckId, StateStore, described
from tasks.common import run_settings
from tasks.incident import (
    diagnose_incident,
    incident_lock,
    recent_check_events,
    recent_flow_runs,
    reprobe,
    run_action,
    write_incident_report,
)
from tasks.monitor import check_context, open_state, utcnow
from tasks.notify import notify

__all__ = ["incident_respond_flow", "incident_resolve_flow"]


def _check(cfg, check_id: str, detail: str | None):
    """The configured check; an unknown id with a ``detail`` (the proactive backup trigger) gets a backups check."""
    if detail and check_id not in {c.id for c in cfg.checks}:
        return BackupsCheck(id=check_id, type="backups", severity="high")
    return cfg.check(check_id)


def _summary(inc, actions=None, suppressed: list[str] | None = None) -> dict:
    return {"incident_id": inc.id if inc else None, "check_id": inc.check_id if inc else None,
            "status": inc.status if inc else None,
            "actions": [{"action": a.action, "ok": a.ok, "ran": a.ran, "detail": a.detail}
                        for a in (inc.actions if inc else actions or [])],
            "report": inc.report if inc else None, "resolved": bool(inc and inc.status == "resolved"),
            "maintenance": suppressed or []}


@flow(name="incident-respond")
@described
def incident_respond_flow(
    check_id: Annotated[CheckId, Field(description="The check that is down (its id in the monitor's config)")],
    detail: Annotated[Annotated[str, Field(max_length=2000)] | None, Field(
        description="What is wrong; default: the check's probe at the start of this run. A check id not in the "
                    "config with a detail (the backup-overdue trigger) gets a backups check")] = None,
    config: Annotated[str | None, Field(description=CONFIG_HELP)] = None,
    state: Annotated[StateStore | None, Field(description=STATE_HELP)] = None,
) -> dict:
    """Re-probe the check; when it still fails, open (or attach to) its incident; diagnose, mitigate,
    escalate, document, notify."""
    settings = run_settings()
    cfg = load_config(config or settings.monitor.config)
    check, store = _check(cfg, check_id, detail), open_state(settings, state)
    with incident_lock(check_id):
        now = utcnow()
        windows = active_windows(check_id, now, cfg.maintenance, store.windows())
        if windows:
            return _summary(None, suppressed=windows)
        check_state = store.check(check_id)
        ctx = check_context(check, settings, check_state, now)
        fresh = reprobe(check, ctx)
        open_inc = store.open_incident(check_id)
        if fresh.ok:  # recovered since the down event: nothing to open, nothing to attach
            return {**_summary(open_inc), "healthy": fresh.detail}
        if open_inc is not None:
            return _summary(_attach(cfg, store, open_inc, detail or fresh.detail, ctx.secrets))
        return _summary(_respond(cfg, store, check, check_state, ctx, detail or fresh.detail))


def _attach(cfg, store, inc, detail: str, secrets: list[str]):
    """A down for a check whose incident is open: noted in its timeline and notified once, nothing reruns."""
    inc = attach(inc, utcnow(), detail)
    store.save_incident(inc)
    notify(cfg.notify_block, f"charhub-ops: incident {inc.id} still open: {inc.check_id} down again",
           f"{inc.check_id}: {detail}\n(down {inc.downs} times since {inc.opened_at:%Y-%m-%d %H:%M} UTC; "
           f"status {inc.status})", secrets)
    return inc


def _respond(cfg, store, check, check_state, ctx, detail: str):
    inc = new_incident(check.id, check.severity, detail, utcnow(), check_state.first_failure_at,
                       check_state.down_at, check_state.failed_probes)
    store.save_incident(inc)  # claims the check's slot before the slow steps
    notify(cfg.notify_block, f"charhub-ops: incident {inc.id} opened ({inc.severity})",
           f"{check.id} is down: {inc.detail}\nrespond {RESPONSE_TARGET[inc.severity]}", ctx.secrets)
    details = diagnose_incident(check, check_state, ctx, cfg.log_lines, recent_flow_runs(),
                                recent_check_events(check.id))
    inc = add(inc.model_copy(update={"diagnosis": summary_lines(details)}), utcnow(), "diagnosis gathered")
    inc = _mitigate(inc, check, cfg, store, ctx)
    latest = store.incident(inc.id)
    if latest is not None and latest.status == "resolved":  # resolved by hand while this run mitigated
        inc = resolve(inc, latest.resolved_at, latest.failed_probes)
    inc = inc.model_copy(update={"report": write_incident_report(cfg.incident_dir, inc, details)})
    store.save_incident(inc)
    _tell(cfg, inc, ctx.secrets)
    return inc


def _mitigate(inc, check, cfg, store, ctx):
    enabled, skipped = planned_actions(check)
    for result in skipped:
        inc = record_action(inc, result)
    for action in enabled:
        inc = record_action(inc, run_action(action, check, cfg, store, ctx))
    if any(a.ran and a.ok for a in inc.actions):
        return add(inc.model_copy(update={"status": "mitigated"}), utcnow(), "mitigated: the re-check passes")
    inc = inc.model_copy(update={"status": "escalated", "escalated_to": cfg.owner})
    return add(inc, utcnow(), f"escalated to {cfg.owner}: no action restored the service")


def _tell(cfg, inc, secrets) -> None:
    lines = [f"{a.action}: {'ran' if a.ran else 'not run'}, {'ok' if a.ok else 'failed'} — {a.detail}"
             for a in inc.actions]
    verb = "mitigated" if inc.status == "mitigated" else f"ESCALATED to {inc.escalated_to}"
    notify(cfg.notify_block, f"charhub-ops: incident {inc.id} {verb}",
           "\n".join([f"{inc.check_id}: {inc.detail}", *lines, f"report: {inc.report}"]), secrets)


@flow(name="incident-resolve")
@described
def incident_resolve_flow(
    check_id: Annotated[CheckId, Field(description="The check that recovered (its id in the monitor's config)")],
    config: Annotated[str | None, Field(description=CONFIG_HELP)] = None,
    state: Annotated[StateStore | None, Field(description=STATE_HELP)] = None,
) -> dict:
    """Close the open incident of ``check_id``: timeline, duration, report, notification."""
    settings = run_settings()
    cfg = load_config(config or settings.monitor.config)
    store = open_state(settings, state)
    with incident_lock(check_id):
        inc = store.open_incident(check_id)
        if inc is None:
            return _summary(None)
        check_state = store.check(check_id)
        recovered = check_state.recovered_at  # the monitor's; none for backup-overdue (a backup completed)
        at = recovered if recovered and recovered >= inc.opened_at else utcnow()
        inc = resolve(inc, at, check_state.failed_probes)
        inc = inc.model_copy(update={"report": write_incident_report(cfg.incident_dir, inc, None)})
        store.save_incident(inc)
    store.prune_incidents(utcnow(), cfg.keep_closed_days)
    store.prune_windows(utcnow())
    notify(cfg.notify_block, f"charhub-ops: incident {inc.id} resolved",
           f"{check_id} recovered at {inc.resolved_at:%Y-%m-%d %H:%M:%S} UTC; report: {inc.report}")
    return _summary(inc)
