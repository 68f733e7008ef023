"""A rolled-back deployment is an incident (CharHub's ops docs): its record and report, in the monitor's
incident model and CharHub's template (:mod:`charhub_ops.monitoring.report`), check id ``deploy``.

Pure: times are arguments. Resolved when the rolled-back services pass the health gate again; escalated to
the config's owner when they do not.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from charhub_ops.deploy.releases import Guard
from charhub_ops.monitoring.incident_model import ActionResult, Incident, add, record_action

__all__ = ["rollback_incident", "incident_report_path"]


def rollback_incident(services: list[str], reason: str, guard: Guard | None, actions: list[ActionResult],
                      gate_detail: str, healthy: bool, started: datetime, now: datetime, owner: str) -> Incident:
    inc = Incident(id=f"deploy-{started:%Y%m%dt%H%M%S}z", check_id="deploy", severity="high",
                   title=f"deployment of {', '.join(services)} rolled back", opened_at=started, detected_at=started,
                   first_failure_at=started, detail=f"{', '.join(services)}: {reason}",
                   diagnosis=[f"rollback reason: {reason}", f"health gate after the rollback: {gate_detail}"])
    if guard is not None and guard.window_id and guard.window_end:
        inc = inc.model_copy(update={"maintenance": [
            f"deploy {guard.release} ({guard.window_id}: {', '.join(services)}'s checks, until "
            f"{guard.window_end:%Y-%m-%d %H:%M} UTC; closed after the rollback)"]})
    if guard is not None:
        backup = f"backup {guard.backup_id} ({guard.label})" if guard.backup_id else "no backup"
        inc = add(inc, guard.at, f"pre-deploy guard for {guard.release}: releases recorded, {backup}, "
                                 f"maintenance window {guard.window_id or 'none'}")
    inc = add(inc, started, f"rollback started: {reason}")
    for action in actions:
        inc = record_action(inc, action)
    inc = add(inc, now, f"health gate {'passed' if healthy else 'FAILED'}: {gate_detail}")
    if healthy:
        return inc.model_copy(update={"status": "resolved", "resolved_at": now})
    return add(inc.model_copy(update={"status": "escalated", "escalated_to": owner}), now,
               f"escalated to {owner}: the rollback did not bring the services back")


def incident_report_path(incident_dir: str, inc: Incident) -> Path:
    return Path(incident_dir) / f"{inc.opened_at:%Y-%m-%d}-deploy-rolled-back-{inc.opened_at:%H%M%S}.md"
