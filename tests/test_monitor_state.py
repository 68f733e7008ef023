"""The alerting state machine, windows, incidents and budgets: pure, table-tested (Gatus / Uptime Kuma semantics)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from charhub_ops.monitoring.config import RecurringWindow
from charhub_ops.monitoring.incident_model import attach, budget_left, new_incident, resolve
from charhub_ops.monitoring.state import CheckState, p95, step
from charhub_ops.monitoring.windows import AdHocWindow, active_windows

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def run(seq: str, *, threshold=3, recovery=2, remind=0.0, maintenance: str = "") -> list[list[str]]:
    """Feed 'F'/'P' probes one minute apart; ``maintenance``: 'M' where the probe is in a window."""
    state, out = CheckState(check_id="c"), []
    for i, probe in enumerate(seq):
        in_window = i < len(maintenance) and maintenance[i] == "M"
        result = step(state, probe == "P", "detail", T0 + timedelta(minutes=i), threshold=threshold,
                      recovery_threshold=recovery, remind_every=remind, maintenance=in_window)
        state = result.state
        out.append(result.events)
    return out


def downs(events):
    return sum("down" in e for e in events)


def recovereds(events):
    return sum("recovered" in e for e in events)


@pytest.mark.parametrize(("seq", "n_down", "n_recovered", "down_at"), [
    ("FF", 0, 0, None),                  # pending: below the threshold, no alert
    ("FFF", 1, 0, 2),                    # down exactly when the streak reaches 3
    ("FFFFFFFF", 1, 0, 2),               # still down: never a second down
    ("FFPFFPFFP", 0, 0, None),           # flapping below the threshold: nothing
    ("FFFPFPFPF", 1, 0, 2),              # flapping while down: one pass never recovers, one incident
    ("FFFPP", 1, 1, 2),                  # recovered once after 2 passes
    ("FFFPPPPP", 1, 1, 2),               # recovered only once
    ("FFFPPFFF", 2, 1, 2),               # a new outage after recovery is a new down
])
def test_streaks(seq, n_down, n_recovered, down_at):
    events = run(seq)
    assert downs(events) == n_down and recovereds(events) == n_recovered
    if down_at is not None:
        assert "down" in events[down_at]
    assert all("failed" in e for e, p in zip(events, seq, strict=True) if p == "F")


def test_thresholds_are_configurable():
    assert downs(run("F", threshold=1)) == 1
    assert recovereds(run("FP", threshold=1, recovery=1)) == 1
    assert recovereds(run("FFFPPP", recovery=3)) == 1 and recovereds(run("FFFPP", recovery=3)) == 0


def test_reminders_no_more_often_than_remind_every():
    events = run("FFFFFFFFFF", remind=180)  # one probe a minute, reminder every 3 minutes while down
    assert [i for i, e in enumerate(events) if "reminder" in e] == [5, 8]
    assert not any("reminder" in e for e in run("FFFFFFFFFF", remind=0))


def test_maintenance_suppresses_down_then_a_still_failing_check_goes_down_after_it():
    events = run("FFFFFF", maintenance="MMMM")
    assert downs(events) == 1 and "suppressed" in events[2] and "down" in events[4]
    assert downs(run("FFFPP", maintenance="MMMMM")) == 0


def test_state_keeps_first_failure_detection_and_failed_probes():
    state = CheckState(check_id="c")
    for i, ok in enumerate([True, False, False, False, False]):
        state = step(state, ok, "x", T0 + timedelta(minutes=i)).state
    assert state.first_failure_at == T0 + timedelta(minutes=1) and state.down_at == T0 + timedelta(minutes=3)
    assert state.failed_probes == 4 and state.status == "down" and len(state.probes) == 5


def test_step_does_not_mutate_and_keeps_latency_window():
    state = CheckState(check_id="c")
    for i in range(30):
        state = step(state, True, "", T0, latency_ms=float(i), latency_window=20).state
    assert state.latencies == [float(i) for i in range(10, 30)]
    before = state.model_dump()
    step(state, False, "", T0)
    assert state.model_dump() == before


@pytest.mark.parametrize(("values", "expected"), [([], None), ([5.0], 5.0), (list(range(1, 21)), 19),
                                                  (list(range(1, 101)), 95)])
def test_p95_nearest_rank(values, expected):
    assert p95([float(v) for v in values]) == expected


def test_recurring_window_across_midnight_and_weekdays():
    w = RecurringWindow(start=time(23, 30), duration_minutes=60, days=["sun"], timezone="UTC")
    sunday = datetime(2026, 11, 29, 23, 45, tzinfo=UTC)
    assert active_windows("c", sunday, [w], []) and active_windows("c", sunday + timedelta(minutes=30), [w], [])
    assert not active_windows("c", sunday + timedelta(minutes=50), [w], [])
    assert not active_windows("c", sunday - timedelta(days=1), [w], [])  # saturday
    only_other = w.model_copy(update={"checks": ["other"]})
    assert not active_windows("c", sunday, [only_other], [])


def test_recurring_window_in_a_time_zone():
    w = RecurringWindow(start=time(3, 0), duration_minutes=30, timezone="America/Sao_Paulo")  # UTC-3
    assert active_windows("c", datetime(2026, 11, 30, 6, 10, tzinfo=UTC), [w], [])
    assert not active_windows("c", datetime(2026, 11, 30, 3, 10, tzinfo=UTC), [w], [])


def test_ad_hoc_window():
    w = AdHocWindow(id="w1", checks=["c"], start=T0, end=T0 + timedelta(minutes=30), reason="deploy", by="ana")
    assert "deploy" in active_windows("c", T0 + timedelta(minutes=5), [], [w])[0]
    assert not active_windows("c", T0 + timedelta(minutes=30), [], [w])
    assert not active_windows("d", T0 + timedelta(minutes=5), [], [w])


def test_incident_attach_and_resolve_keep_one_incident_with_a_timeline():
    inc = new_incident("c", "critical", "status 500", T0 + timedelta(minutes=3), T0 + timedelta(minutes=1),
                       T0 + timedelta(minutes=3), 3)
    inc = attach(inc, T0 + timedelta(minutes=9), "status 500")
    inc = resolve(inc, T0 + timedelta(minutes=12), failed_probes=7)
    assert inc.downs == 2 and inc.status == "resolved" and inc.failed_probes == 7
    times = [e.at for e in inc.timeline]
    assert times == sorted(times) and times[0] == T0 + timedelta(minutes=1) and times[-1] == T0 + timedelta(minutes=12)


def test_restart_budget_is_a_sliding_hour():
    restarts = [T0, T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)]
    assert budget_left(restarts, T0 + timedelta(minutes=30), 3) == 0
    assert budget_left(restarts, T0 + timedelta(minutes=61), 3) == 1
    assert budget_left([], T0, 0) == 0
