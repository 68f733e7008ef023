"""The monitor's scheduler: pure, table-tested (no clock, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from charhub_ops.monitoring.schedule import parse_interval, plan, wake_at

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
INTERVALS = {"web": 30.0, "db": 60.0}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(("next_at", "now", "due", "after"), [
    ({}, 0, ["web", "db"], {"web": 30, "db": 60}),                      # never run: all due at once
    ({"web": 30, "db": 60}, 29.9, [], {"web": 30, "db": 60}),           # nothing due yet
    ({"web": 30, "db": 60}, 30, ["web"], {"web": 60, "db": 60}),        # each on its own interval
    ({"web": 60, "db": 60}, 60, ["web", "db"], {"web": 90, "db": 120}),
    ({"web": 90, "db": 120}, 92.5, ["web"], {"web": 120, "db": 120}),   # a late tick: no drift
    ({"web": 120, "db": 120}, 400, ["web", "db"], {"web": 430, "db": 460}),  # far behind: once, no burst
    ({"web": 30}, 10, ["db"], {"web": 30, "db": 70}),                   # a check added later
])
def test_plan(next_at, now, due, after):
    got_due, got_after = plan(INTERVALS, {k: at(v) for k, v in next_at.items()}, at(now))
    assert got_due == due
    assert got_after == {k: at(v) for k, v in after.items()}
    assert all(t > at(now) for t in got_after.values())  # invariant: every next due time is in the future


def test_wake_at_is_the_earliest_due_time():
    assert wake_at({"web": at(30), "db": at(10)}) == at(10)
    assert wake_at({}) is None


@pytest.mark.parametrize(("value", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("90", 90), (45, 45),
                                                (0.5, 0.5), ("1.5m", 90)])
def test_parse_interval(value, seconds):
    assert parse_interval(value) == seconds


@pytest.mark.parametrize("value", ["", "30x", "-5s", "0s", "every minute", True])
def test_parse_interval_refuses(value):
    with pytest.raises(ValueError, match="interval"):
        parse_interval(value)
