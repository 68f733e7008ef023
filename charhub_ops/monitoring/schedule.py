"""When each check is due: a small pure scheduler (no clock, no I/O; ``now`` is an argument).

Every key (a check id, or one of the monitor's own chores such as the heartbeat) has an interval in seconds and
a next due time. :func:`plan` returns the keys due at ``now`` and the next due times: a key never run is due at
once; a key that ran is due again one interval after its *previous due time*, so a slow probe does not make
the cadence drift; a monitor that fell behind by more than an interval (a suspended host, a long probe)
probes once and starts again from ``now`` instead of catching up with a burst. :func:`wake_at` is the
earliest next due time (when the loop should wake up). :func:`parse_interval` reads ``30s``, ``5m``,
``1h`` or seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta

__all__ = ["parse_interval", "plan", "wake_at"]

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_interval(value: float | int | str) -> float:
    """Seconds from a number or a string such as ``30s``, ``5m``, ``1h``, ``90``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"interval {value!r}: use seconds or 30s / 5m / 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        found = _INTERVAL.match(str(value))
        if not found:
            raise ValueError(f"interval {value!r}: use seconds or 30s / 5m / 1h")
        seconds = float(found[1]) * _UNITS[found[2]]
    if seconds <= 0:
        raise ValueError(f"interval {value!r}: must be more than 0 s")
    return seconds


def plan(intervals: Mapping[str, float], next_at: Mapping[str, datetime],
         now: datetime) -> tuple[list[str], dict[str, datetime]]:
    """The keys due at ``now`` (in the order of ``intervals``) and every key's next due time."""
    due, after = [], {}
    for key, seconds in intervals.items():
        at = next_at.get(key)
        if at is not None and at > now:
            after[key] = at
            continue
        due.append(key)
        step = timedelta(seconds=seconds)
        following = (at or now) + step
        after[key] = following if following > now else now + step
    return due, after


def wake_at(next_at: Mapping[str, datetime]) -> datetime | None:
    """The earliest next due time; None without keys."""
    return min(next_at.values(), default=None)
