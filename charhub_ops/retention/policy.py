"""Retention policy: which backups to keep, which to remove, and why (restic ``forget`` semantics).

Pure: no I/O, no clock, no logging. The model is restic's ``internal/data/snapshot_policy.go``: a policy
struct plus one function that returns keep, remove *and* the reasons. Semantics are restic 0.16+'s
(``tests/test_retention_restic.py`` compares with the real binary):

* Backups are sorted newest first (ties by id). A count rule (last, hourly, daily, weekly, monthly,
  yearly) keeps a backup when its UTC period key (``YYYYMMDDHH``, ``YYYYMMDD``, ISO ``YYYYWW``,
  ``YYYYMM``, ``YYYY``) differs from the last key that rule kept, until its count is used up;
  ``-1`` means unlimited. If the count is not used up when the oldest backup is reached, the oldest
  is kept too (reason ``oldest (daily)`` when its period already had a kept backup): the longest
  history the counts allow.
* ``within D`` keeps every backup strictly newer than ``newest - D``; ``within_<period> D`` is the
  period rule without a count, limited to that window (its oldest rule: ``oldest (daily within 3d)``).
  ``newest - D`` is Go's ``AddDate(-y, -m, -d).Add(-h)``: Mar 31 minus 1 month is "Feb 31" = Mar 3.
* restic 0.14 (the packaged binary here) lacks the oldest rule and reads ``-1`` as "rule off"; the
  differential test leaves the oldest backup out of the comparison and passes a huge count for -1.

Additions on top of restic: incomplete backups are ignored (never counted, never removed), an empty
policy keeps everything, ``min_keep`` rescues the newest removed backups, and a plan that would
remove every complete backup raises :class:`PolicyError`. Which policy applies (options or settings):
:mod:`charhub_ops.retention.options`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator

from charhub_ops.errors import PolicyError

__all__ = [
    "Candidate",
    "Duration",
    "Kept",
    "RetentionPlan",
    "RetentionPolicy",
    "apply_policy",
    "parse_duration",
    "plan_from_records",
    "plan_to_json",
]

_DURATION_HINT = "use e.g. 7d, 2w, 1y6m, 36h"
_DURATION_PART = re.compile(r"(\d+)([ymwdh])")
_UNIT_FIELDS = {"y": "years", "m": "months", "w": "weeks", "d": "days", "h": "hours"}


@dataclass(frozen=True)
class Duration:
    """A calendar duration: years, months, weeks (7 days; not accepted by restic), days, hours."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0

    def __str__(self) -> str:
        parts = zip((self.years, self.months, self.weeks, self.days, self.hours), "ymwdh", strict=True)
        return "".join(f"{n}{unit}" for n, unit in parts if n)

    def before(self, t: datetime) -> datetime:
        """``t`` minus this duration, as Go's ``t.AddDate(-y, -m, -d).Add(-h * time.Hour)``."""
        try:
            shifted = _go_add_date(t, -self.years, -self.months, -(self.weeks * 7 + self.days))
            return shifted - timedelta(hours=self.hours)
        except (OverflowError, ValueError):  # before year 1: every backup is within
            return datetime.min.replace(tzinfo=t.tzinfo)


def _go_add_date(t: datetime, years: int, months: int, days: int) -> datetime:
    """Go's ``AddDate``: shift year and month, then let the day overflow into the next months."""
    month_index = t.year * 12 + (t.month - 1) + years * 12 + months
    first = t.replace(year=month_index // 12, month=month_index % 12 + 1, day=1)
    return first + timedelta(days=t.day - 1 + days)


def _parse_duration(text: object) -> Duration:
    """Parse ``1y2m3d4h``-style text; raise ``ValueError`` with a message that does not name a field."""
    if isinstance(text, Duration):
        return text
    cleaned = text.strip() if isinstance(text, str) else ""
    parts = _DURATION_PART.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"cannot parse duration {text!r} ({_DURATION_HINT})")
    values: dict[str, int] = {}
    for number, unit in parts:
        name = _UNIT_FIELDS[unit]
        if name in values:
            raise ValueError(f"cannot parse duration {text!r}: unit '{unit}' given twice ({_DURATION_HINT})")
        values[name] = int(number)
    duration = Duration(**values)
    if not any(values.values()):
        raise ValueError(f"duration {text!r} is zero ({_DURATION_HINT})")
    return duration


def parse_duration(text: str, *, option: str = "duration") -> Duration:
    """Parse a restic-style duration (``7d``, ``2w``, ``1y6m``, ``36h``); raise :class:`PolicyError`."""
    try:
        return _parse_duration(text)
    except ValueError as exc:
        raise PolicyError(f"{option}: {exc}") from None


_PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")
_COUNT_FIELDS = ("keep_last", *(f"keep_{p}" for p in _PERIODS))
_WITHIN_FIELDS = ("keep_within", *(f"keep_within_{p}" for p in _PERIODS))


class RetentionPolicy(BaseModel):
    """Which backups to keep. Counts: ``None``/0 = rule off, ``-1`` = unlimited. Durations as text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep_last: int | None = Field(None, strict=True, description="keep the newest n backups")
    keep_hourly: int | None = Field(None, strict=True, description="keep the newest of each of n hours")
    keep_daily: int | None = Field(None, strict=True, description="keep the newest of each of n days")
    keep_weekly: int | None = Field(None, strict=True, description="keep the newest of each of n ISO weeks")
    keep_monthly: int | None = Field(None, strict=True, description="keep the newest of each of n months")
    keep_yearly: int | None = Field(None, strict=True, description="keep the newest of each of n years")
    keep_within: Duration | None = Field(None, description="keep all backups within D of the newest")
    keep_within_hourly: Duration | None = Field(None, description="keep hourly backups within D")
    keep_within_daily: Duration | None = Field(None, description="keep daily backups within D")
    keep_within_weekly: Duration | None = Field(None, description="keep weekly backups within D")
    keep_within_monthly: Duration | None = Field(None, description="keep monthly backups within D")
    keep_within_yearly: Duration | None = Field(None, description="keep yearly backups within D")
    min_keep: int = Field(3, ge=0, strict=True, description="never keep fewer complete backups than this")

    @field_validator(*_COUNT_FIELDS)
    @classmethod
    def _check_count(cls, value: int | None) -> int | None:
        if value is not None and value < -1:
            raise ValueError(f"must be -1 (unlimited), 0 (off) or a positive count, got {value}")
        return value

    @field_validator(*_WITHIN_FIELDS, mode="before")
    @classmethod
    def _parse_within(cls, value: object) -> Duration | None:
        return None if value is None else _parse_duration(value)

    @field_serializer(*_WITHIN_FIELDS)
    def _dump_within(self, value: Duration | None) -> str | None:
        return None if value is None else str(value)

    @classmethod
    def build(cls, **kwargs: Any) -> RetentionPolicy:
        """Validate ``kwargs``; any problem becomes one :class:`PolicyError` naming the field(s)."""
        try:
            return cls.model_validate(kwargs)
        except ValidationError as exc:
            raise PolicyError("retention policy: " + "; ".join(map(_describe, exc.errors()))) from None

    def is_empty(self) -> bool:
        """True when no rule is set (counts ``None``/0, no durations): such a policy keeps everything."""
        counts = (getattr(self, name) for name in _COUNT_FIELDS)
        return all(c in (None, 0) for c in counts) and all(getattr(self, n) is None for n in _WITHIN_FIELDS)


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "policy"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown option"
    if error["type"] == "value_error":
        return f"{where}: {error['ctx']['error']}"
    return f"{where}: {error['msg']}"


@dataclass(frozen=True)
class Candidate:
    """One backup as seen by the policy. ``complete=False`` (failed run) is ignored by the policy."""

    id: str
    time: datetime
    complete: bool = True


@dataclass(frozen=True)
class Kept:
    """A backup the plan keeps, with every rule that keeps it (in restic's order)."""

    id: str
    time: datetime
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RetentionPlan:
    """The result of :func:`apply_policy`; every list is newest first."""

    keep: list[Kept]
    remove: list[Candidate]
    ignored: list[Candidate]


# Period keys, as restic's ymdh/ymd/yw/ym/y (all on UTC times).
def _hour_key(t: datetime) -> int:
    return t.year * 1_000_000 + t.month * 10_000 + t.day * 100 + t.hour


def _day_key(t: datetime) -> int:
    return t.year * 10_000 + t.month * 100 + t.day


def _week_key(t: datetime) -> int:
    iso_year, iso_week, _ = t.isocalendar()
    return iso_year * 100 + iso_week


def _month_key(t: datetime) -> int:
    return t.year * 100 + t.month


def _year_key(t: datetime) -> int:
    return t.year


_PERIOD_KEYS: dict[str, Callable[[datetime], int]] = {
    "hourly": _hour_key,
    "daily": _day_key,
    "weekly": _week_key,
    "monthly": _month_key,
    "yearly": _year_key,
}


def _active(count: int | None) -> bool:
    """A count rule runs for a positive count or -1; 0, None (and anything else) leave it off."""
    return count is not None and (count > 0 or count == -1)


def _count_rule(keys: list[int], count: int) -> list[tuple[int, bool]]:
    """(index, is_oldest_extra) kept by a count rule: each new key, newest first, until ``count``
    (-1: never) runs out; plus the oldest index when the count is not used up by then."""
    kept: list[tuple[int, bool]] = []
    last: int | None = None
    left = count
    for index, key in enumerate(keys):
        if left == 0:
            break
        oldest = index == len(keys) - 1
        if key != last or oldest:
            kept.append((index, key == last))
            last = key
            if left > 0:
                left -= 1
    return kept


def _window_rule(keys: list[int], times: list[datetime], cutoff: datetime) -> list[tuple[int, bool]]:
    """(index, is_oldest_extra) kept by a ``within_<period>`` rule: each new key among backups newer
    than ``cutoff``, plus the oldest backup when it is inside the window."""
    kept: list[tuple[int, bool]] = []
    last: int | None = None
    for index, (key, t) in enumerate(zip(keys, times, strict=True)):
        if t <= cutoff:
            break
        if key != last or index == len(keys) - 1:
            kept.append((index, key == last))
            last = key
    return kept


def _add(reasons: list[list[str]], kept: list[tuple[int, bool]], reason: str) -> None:
    for index, oldest in kept:
        reasons[index].append(f"oldest ({reason})" if oldest else reason)


def _rule_reasons(times: list[datetime], policy: RetentionPolicy) -> list[list[str]]:
    """The reasons each backup (sorted newest first) is kept by the policy's rules, in restic's order."""
    if policy.is_empty():
        return [["policy empty"] for _ in times]
    reasons: list[list[str]] = [[] for _ in times]
    # restic takes the newest snapshot that is not in the future; with no clock here, simply the newest.
    newest = times[0]
    if policy.keep_within is not None:
        cutoff = policy.keep_within.before(newest)
        for index, t in enumerate(times):
            if t > cutoff:
                reasons[index].append(f"within {policy.keep_within}")
    if _active(policy.keep_last):
        _add(reasons, _count_rule(list(range(len(times))), policy.keep_last or 0), "last")
    for period, key in _PERIOD_KEYS.items():
        count = getattr(policy, f"keep_{period}")
        if _active(count):
            _add(reasons, _count_rule([key(t) for t in times], count), period)
    for period, key in _PERIOD_KEYS.items():
        window: Duration | None = getattr(policy, f"keep_within_{period}")
        if window is not None:
            _add(reasons, _window_rule([key(t) for t in times], times, window.before(newest)),
                 f"{period} within {window}")
    return reasons


def _sorted_complete(candidates: Iterable[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    """Split into complete and incomplete, each newest first (ties by id); check times and ids."""
    complete: list[Candidate] = []
    ignored: list[Candidate] = []
    seen: set[str] = set()
    for candidate in candidates:
        if candidate.time.tzinfo is None:
            raise PolicyError(f"backup {candidate.id}: time {candidate.time.isoformat()} has no timezone")
        if candidate.id in seen:
            raise PolicyError(f"backup {candidate.id}: id appears twice")
        seen.add(candidate.id)
        (complete if candidate.complete else ignored).append(candidate)
    for group in (complete, ignored):
        group.sort(key=lambda c: c.id)
        group.sort(key=lambda c: c.time, reverse=True)
    return complete, ignored


def apply_policy(candidates: Iterable[Candidate], policy: RetentionPolicy) -> RetentionPlan:
    """Split complete backups into keep (with reasons) and remove; incomplete ones are only reported.

    Raises :class:`PolicyError` for naive times, duplicate ids, or a plan removing every complete backup.
    """
    complete, ignored = _sorted_complete(candidates)
    if not complete:
        return RetentionPlan(keep=[], remove=[], ignored=ignored)
    times = [c.time.astimezone(UTC) for c in complete]
    reasons = _rule_reasons(times, policy)
    missing = policy.min_keep - sum(1 for r in reasons if r)
    for reason in reasons:  # newest removed first
        if missing <= 0:
            break
        if not reason:
            reason.append("min_keep")
            missing -= 1
    keep = [Kept(c.id, t, r) for c, t, r in zip(complete, times, reasons, strict=True) if r]
    remove = [c for c, r in zip(complete, reasons, strict=True) if not r]
    if not keep:
        raise PolicyError(f"retention policy would remove all {len(remove)} complete backups; refusing")
    return RetentionPlan(keep=keep, remove=remove, ignored=ignored)


def _candidate_from_record(index: int, record: object) -> Candidate:
    where = f"records[{index}]"
    if not isinstance(record, dict):
        raise PolicyError(f"{where}: expected an object with 'id' and 'time', got {type(record).__name__}")
    backup_id, text, complete = record.get("id"), record.get("time"), record.get("complete", True)
    if not isinstance(backup_id, str) or not backup_id:
        raise PolicyError(f"{where}: 'id' must be a non-empty string, got {backup_id!r}")
    if not isinstance(text, str):
        raise PolicyError(f"{where} ({backup_id}): 'time' must be an ISO-8601 string, got {text!r}")
    if not isinstance(complete, bool):
        raise PolicyError(f"{where} ({backup_id}): 'complete' must be true or false, got {complete!r}")
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PolicyError(f"{where} ({backup_id}): cannot parse time {text!r} as ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return Candidate(id=backup_id, time=parsed.astimezone(UTC), complete=complete)


def plan_from_records(records: list[dict[str, Any]], policy: RetentionPolicy) -> RetentionPlan:
    """:func:`apply_policy` on ``[{"id": str, "time": ISO-8601 str, "complete"?: bool}]`` (naive = UTC)."""
    if not isinstance(records, list):
        raise PolicyError(f"records: expected a list of objects, got {type(records).__name__}")
    return apply_policy([_candidate_from_record(i, r) for i, r in enumerate(records)], policy)


def plan_to_json(plan: RetentionPlan) -> dict[str, Any]:
    """``{"keep": [{"id", "reasons"}], "remove": [ids]}``, newest first."""
    return {
        "keep": [{"id": k.id, "reasons": list(k.reasons)} for k in plan.keep],
        "remove": [c.id for c in plan.remove],
    }
