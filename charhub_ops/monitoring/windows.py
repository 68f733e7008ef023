"""Maintenance windows: recurring ones from the config, ad hoc ones opened by ``charhub-ops maintenance start``.

Pure: ``now`` is an argument. A window covers a check when its ``checks`` list is empty or names it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from charhub_ops.monitoring.config import RecurringWindow

__all__ = ["AdHocWindow", "active_windows", "describe", "parse_duration"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class AdHocWindow(BaseModel):
    id: str
    checks: list[str] = Field(default_factory=list, description="Empty = every check")
    start: datetime
    end: datetime
    reason: str = "maintenance"
    by: str = ""


def _covers(checks: list[str], check_id: str) -> bool:
    return not checks or check_id in checks


def _recurring_active(w: RecurringWindow, now: datetime) -> tuple[datetime, datetime] | None:
    local = now.astimezone(ZoneInfo(w.timezone))
    for back in (0, 1, 2, 3, 4, 5, 6, 7):  # a window may start on an earlier day and still run
        day = (local - timedelta(days=back)).date()
        if _DAYS[day.weekday()] not in w.days:
            continue
        start = datetime.combine(day, w.start, tzinfo=local.tzinfo)
        end = start + timedelta(minutes=w.duration_minutes)
        if start <= local < end:
            return start, end
    return None


def active_windows(check_id: str, now: datetime, recurring: list[RecurringWindow],
                   adhoc: list[AdHocWindow]) -> list[str]:
    """Descriptions of the windows covering ``check_id`` at ``now`` (empty: not in maintenance)."""
    found = []
    for w in recurring:
        if _covers(w.checks, check_id) and (span := _recurring_active(w, now)):
            found.append(f"{w.reason} (recurring {', '.join(w.days)} {w.start:%H:%M} {w.timezone}, "
                         f"{w.duration_minutes:g} min; until {span[1]:%Y-%m-%d %H:%M %Z})")
    for w in adhoc:
        if _covers(w.checks, check_id) and w.start <= now < w.end:
            found.append(describe(w))
    return found


def describe(w: AdHocWindow) -> str:
    who = f" by {w.by}" if w.by else ""
    return (f"{w.reason} (ad hoc {w.id}{who}: {', '.join(w.checks) or 'every check'}, "
            f"{w.start:%Y-%m-%d %H:%M}–{w.end:%H:%M} UTC)")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``1h30m``, ``90s``, ``1d`` → timedelta; ValueError otherwise."""
    import re

    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise ValueError(f"{text!r}: expected a duration like 30m, 2h, 1h30m")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))
