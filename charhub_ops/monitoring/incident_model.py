"""Incidents: one open incident per check id (a second ``down`` attaches to it — Keep's one_until_resolved).

Pure functions over the :class:`Incident` model; the clock is an argument. The full story (diagnosis,
logs) goes into the report file; the stored incident stays small (it lives in a Prefect Variable).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["TimelineEntry", "ActionResult", "Incident", "new_incident", "attach", "add", "record_action",
           "resolve", "duration_text", "budget_left", "prune_budget", "RESPONSE_TARGET"]

TIMELINE_KEPT = 40
RESPONSE_TARGET = {"critical": "now", "high": "within 1 h", "medium": "within 4 h", "low": "next working day"}


class TimelineEntry(BaseModel):
    at: datetime
    what: str


class ActionResult(BaseModel):
    action: str
    ok: bool
    ran: bool = Field(description="False: disabled, over budget or not applicable — reported, not run")
    detail: str
    at: datetime


class Incident(BaseModel):
    id: str
    check_id: str
    severity: Literal["critical", "high", "medium", "low"]
    status: Literal["open", "mitigated", "escalated", "resolved"] = "open"
    title: str
    opened_at: datetime
    first_failure_at: datetime | None = None
    detected_at: datetime | None = None
    resolved_at: datetime | None = None
    detail: str = ""
    downs: int = 1
    failed_probes: int = 0
    timeline: list[TimelineEntry] = Field(default_factory=list)
    actions: list[ActionResult] = Field(default_factory=list)
    escalated_to: str | None = None
    maintenance: list[str] = Field(default_factory=list)
    diagnosis: list[str] = Field(default_factory=list, description="Preliminary root-cause facts (short)")
    report: str | None = None


def new_incident(check_id: str, severity: str, detail: str, now: datetime, first_failure_at: datetime | None,
                 detected_at: datetime | None, failed_probes: int) -> Incident:
    inc = Incident(id=f"{check_id}-{now:%Y%m%dt%H%M%S}z", check_id=check_id, severity=severity,
                   title=f"{check_id} down", opened_at=now, first_failure_at=first_failure_at,
                   detected_at=detected_at or now, detail=detail, failed_probes=failed_probes)
    if first_failure_at:
        inc = add(inc, first_failure_at, "first failed probe")
    inc = add(inc, detected_at or now, f"detected: down after consecutive failures ({detail})")
    return add(inc, now, f"incident opened (severity {severity})")


def add(inc: Incident, at: datetime, what: str) -> Incident:
    timeline = sorted([*inc.timeline, TimelineEntry(at=at, what=what[:300])], key=lambda e: e.at)
    return inc.model_copy(update={"timeline": timeline[-TIMELINE_KEPT:]})


def attach(inc: Incident, now: datetime, detail: str) -> Incident:
    """A second ``down`` for a check that already has an open incident: noted, nothing new opened."""
    inc = add(inc, now, f"down again while open ({detail}); attached to this incident")
    return inc.model_copy(update={"downs": inc.downs + 1})


def record_action(inc: Incident, result: ActionResult) -> Incident:
    verb = "ran" if result.ran else "not run"
    inc = add(inc, result.at, f"mitigation {result.action} {verb}: {'ok' if result.ok else 'failed'} — "
                              f"{result.detail}")
    return inc.model_copy(update={"actions": [*inc.actions, result]})


def resolve(inc: Incident, now: datetime, failed_probes: int | None = None,
            why: str = "recovered: check passing again; incident resolved") -> Incident:
    inc = add(inc, now, why)
    update = {"status": "resolved", "resolved_at": now}
    if failed_probes is not None:
        update["failed_probes"] = max(inc.failed_probes, failed_probes)
    return inc.model_copy(update=update)


def duration_text(inc: Incident, now: datetime) -> str:
    start = inc.first_failure_at or inc.detected_at or inc.opened_at
    seconds = int(((inc.resolved_at or now) - start).total_seconds())
    text = f"{seconds // 3600}h {seconds % 3600 // 60}m {seconds % 60}s"
    return text if inc.resolved_at else text + " (ongoing)"


def prune_budget(times: list[datetime], now: datetime) -> list[datetime]:
    return [t for t in times if now - t < timedelta(hours=1)]


def budget_left(times: list[datetime], now: datetime, per_hour: int) -> int:
    """Restarts still allowed in the sliding hour ending at ``now``."""
    return max(0, per_hour - len(prune_budget(times, now)))
