"""What the Prefect server's own retention (its ``db_vacuum`` service) does, read from the server's settings —
pure: the caller fetches ``GET /api/admin/settings`` (Prefect 3.9; secrets obfuscated) and passes the JSON.

Prefect 3.9's vacuum is configured only in the **server's** environment; no API changes it. What it can do
(prefect/server/services/db_vacuum.py):

* ``PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED`` — a set of ``events``, ``flow_runs``, ``orphans``; default
  ``events`` only, so flow runs are never deleted unless ``flow_runs`` is in it (which also turns on ``orphans``:
  logs and artifacts left behind by deleted runs);
* ``..._RETENTION_PERIOD`` — seconds; top-level terminal flow runs whose ``end_time`` is older go (default 90 days,
  minimum 1 h). One period for every run on the server: no per-deployment or per-state period;
* ``PREFECT_SERVER_EVENTS_RETENTION_PERIOD`` — every event (and its ``event_resources`` rows), default 7 days; an
  ISO 8601 duration (``P7D``): unlike the vacuum's periods it does not accept plain seconds;
* ``..._EVENT_RETENTION_OVERRIDES`` — JSON ``{event type: seconds}``, **exact** event types (no wildcards), each
  capped by the events period; default ``{"prefect.flow-run.heartbeat": 604800}`` (replaced, not merged, when set);
* ``..._BATCH_SIZE`` (200 rows a transaction), ``..._LOOP_SECONDS`` (3600).

:func:`read_retention` turns the settings into a :class:`ServerRetention`; :func:`retention_warning` is the one line
``status`` prints when flow-run retention cannot be confirmed; :data:`RECOMMENDED_ENV` is what docs/prefect-retention.md
tells the operator to set on the server.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["RECOMMENDED_ENV", "ServerRetention", "read_retention", "retention_warning", "describe"]

DAY = 86400
# The events charhub-ops itself emits in volume (one per failed probe; check ids vary, the event type does not).
CHECK_EVENTS = ("charhub.check.failed",)
# charhub.monitor.heartbeat: the long-running monitor's liveness (the 'monitor stopped' automation looks 30 min back)
RECOMMENDED_OVERRIDES = {"prefect.flow-run.heartbeat": 1 * DAY, "charhub.check.failed": 3 * DAY,
                         "charhub.monitor.heartbeat": 1 * DAY, "prefect.task-run.Pending": 2 * DAY,
                         "prefect.task-run.Running": 2 * DAY, "prefect.task-run.Completed": 2 * DAY}
RECOMMENDED_ENV = {
    "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
    "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(90 * DAY),
    "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": "P7D",  # a plain timedelta: ISO 8601, not seconds ("604800" fails)
    "PREFECT_SERVER_SERVICES_DB_VACUUM_EVENT_RETENTION_OVERRIDES": json.dumps(RECOMMENDED_OVERRIDES),
}
_ISO = re.compile(r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
                  r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


class ServerRetention(BaseModel):
    """The server's vacuum as its settings say. ``known`` False: the settings could not be read."""

    model_config = ConfigDict(frozen=True)

    known: bool
    vacuum: list[str] = []
    flow_runs: timedelta | None = None  # None: flow runs are never deleted by the server
    events: timedelta | None = None  # None: events are never deleted (vacuum or persister off)
    overrides: dict[str, timedelta] = {}
    detail: str = ""


def _duration(value: Any) -> timedelta:
    """Pydantic's JSON of a timedelta (``P90D``, ``PT3600S``) or seconds."""
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _ISO.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return timedelta(days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0),
                     seconds=parts.get("s", 0))


def _enabled(raw: Any) -> set[str]:
    """As Prefect resolves ``enabled``: true → events + flow runs, false → events, null → nothing."""
    if raw is True:
        raw = ["events", "flow_runs"]
    elif raw is False:
        raw = ["events"]
    kinds = set(raw or [])
    return kinds | {"orphans"} if "flow_runs" in kinds else kinds


def read_retention(settings: dict | None, detail: str = "") -> ServerRetention:
    """The retention in the server's settings JSON (``None``: not readable, ``detail`` says why)."""
    try:
        server = settings["server"]  # type: ignore[index]
        vacuum = server["services"]["db_vacuum"]
        kinds = _enabled(vacuum["enabled"])
        events_on = "events" in kinds and server["services"]["event_persister"]["enabled"]
        return ServerRetention(
            known=True, vacuum=sorted(kinds),
            flow_runs=_duration(vacuum["retention_period"]) if "flow_runs" in kinds else None,
            events=_duration(server["events"]["retention_period"]) if events_on else None,
            overrides={k: _duration(v) for k, v in (vacuum.get("event_retention_overrides") or {}).items()})
    except (KeyError, TypeError, ValueError) as exc:
        return ServerRetention(known=False, detail=detail or f"unexpected settings ({exc})")


def retention_warning(retention: ServerRetention) -> str | None:
    """One line when the server's retention of flow runs cannot be confirmed; None when it can."""
    fix = ("set PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED=events,flow_runs on the server, or run "
           "`charhub-ops cleanup prefect` (docs/prefect-retention.md)")
    if not retention.known:
        return f"Prefect retention: cannot read the server's settings ({retention.detail}); {fix}"
    if retention.flow_runs is None:
        vacuum = ", ".join(retention.vacuum) or "off"
        return f"Prefect retention: the server never deletes flow runs (db_vacuum: {vacuum}); {fix}"
    return None


def _days(period: timedelta | None) -> str:
    if period is None:
        return "kept forever"
    days = period.total_seconds() / DAY
    return f"{days:g} day{'' if days == 1 else 's'}" if period >= timedelta(days=1) else f"{period}"


def describe(retention: ServerRetention) -> list[str]:
    """Human lines for ``setup``: what the server deletes and after how long."""
    if not retention.known:
        return [f"server retention: unknown ({retention.detail})"]
    lines = [f"server retention: flow runs {_days(retention.flow_runs)}, events {_days(retention.events)}"]
    if retention.events is not None:
        lines += [f"  events {kind}: {_days(min(period, retention.events))}"
                  for kind, period in sorted(retention.overrides.items())]
        missing = [kind for kind in CHECK_EVENTS if kind not in retention.overrides]
        lines += [f"  events {kind}: no override (the events period applies; docs/prefect-retention.md)"
                  for kind in missing]
    return lines
