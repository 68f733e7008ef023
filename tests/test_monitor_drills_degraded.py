"""More chaos drills, each through a full incident (test_monitor_drills.py has the first ones): a slow backend
(p95 over budget), connections exhausted, a container burning CPU, a log error rate over 1 %.

Each drill: detection within ``threshold`` passes, exactly one incident, the right mitigation (or, when not
enabled: reported, not run, and escalation), a report file with a real timeline, resolution once the fault is
removed. Small thresholds and windows keep the file fast.
"""

from __future__ import annotations

import psycopg
import pytest

from flows.incident import incident_resolve_flow, incident_respond_flow
from tests.harness.monitor import (
    backend_fixture,  # noqa: F401 - fixture
    http_check,
    new_id,
    passes,
    store,
    write_config,
)


def _detected(config: str, threshold: int) -> list[dict]:
    """``threshold`` passes of a failing check: pending until the last one, which goes down (one event)."""
    rows = passes(config, threshold)
    assert [r["state"] for r in rows] == ["up"] * (threshold - 1) + ["down"]
    assert ["down" in r["events"] for r in rows] == [False] * (threshold - 1) + [True]
    assert not any(r["ok"] for r in rows)
    return rows


def _actions(result: dict) -> list[tuple]:
    return [(a["action"], a["ran"], a["ok"]) for a in result["actions"]]


def _resolved(config: str, cid: str, result: dict, most: int) -> str:
    """Monitor passes until the check recovers (at most ``most``), then incident-resolve; the report's text."""
    for _ in range(most):
        row = passes(config, 1)[0]
        if "recovered" in row["events"]:
            break
    assert row["state"] == "up" and "recovered" in row["events"], row
    assert [i.id for i in store().incidents() if i.check_id == cid] == [result["incident_id"]]  # exactly one
    closed = incident_resolve_flow(check_id=cid, config=config)
    assert closed["resolved"] and closed["incident_id"] == result["incident_id"]
    assert closed["report"] == result["report"]
    return open(closed["report"]).read()


def _timeline(report: str, *steps: str) -> None:
    """The report's timeline has real UTC times in order and, in this order, every one of ``steps``."""
    lines = [line for line in report.splitlines() if line.startswith("| 20")]
    times = [line.split("|")[1] for line in lines]
    assert times == sorted(times)
    found = [next(i for i, line in enumerate(lines) if step in line) for step in steps]
    assert found == sorted(found), (steps, lines)
    assert "**Status**: Resolved" in report


def test_slow_backend_p95_over_budget_is_restarted(backend, prefect_server, tmp_path):
    cid = new_id("slow")
    config = write_config(tmp_path, [http_check(backend, cid, url=backend.delayed_url(), latency_budget_ms=300,
                                                latency_window=3, threshold=2)], recheck_seconds=10)
    assert passes(config, 1)[0]["ok"]
    backend.slow_down(0.8)  # /run/delay: every answer waits 0.8 s until the container restarts
    rows = _detected(config, 2)
    assert "> budget 300 ms" in rows[0]["detail"] and "status" not in rows[0]["detail"]
    result = incident_respond_flow(check_id=cid, config=config)
    assert result["status"] == "mitigated" and _actions(result) == [("restart_container", True, True)]
    assert "p95" in result["actions"][0]["detail"]  # why it restarted: the fresh probe was slow too
    report = _resolved(config, cid, result, most=3 + 2)  # slow probes leave the window, then 2 passes
    _timeline(report, "first failed probe", "detected", "mitigation restart_container", "mitigated", "recovered")


def test_container_burning_cpu_is_restarted(backend, prefect_server, tmp_path):
    cid = new_id("cpu")
    config = write_config(tmp_path, [{"id": cid, "type": "container", "container": backend.name, "threshold": 2,
                                      "recovery_threshold": 1, "cpu_max_percent": 20, "memory_max_percent": None,
                                      "mitigations": ["restart_container"]}], recheck_seconds=10)
    assert passes(config, 1)[0]["ok"]
    backend.burn_cpu()
    rows = _detected(config, 2)
    assert "CPU" in rows[0]["detail"] and "> 20 %" in rows[0]["detail"]
    result = incident_respond_flow(check_id=cid, config=config)
    assert result["status"] == "mitigated" and _actions(result) == [("restart_container", True, True)]
    assert backend.container.status == "running"
    assert "while :" not in str(backend.container.top()["Processes"])  # the restart ended the burner
    report = _resolved(config, cid, result, most=1)  # each probe samples CPU for ~2 s: one recovery pass
    _timeline(report, "first failed probe", "detected", "mitigation restart_container", "mitigated", "recovered")


def test_log_error_rate_over_budget_is_escalated_without_restart(backend, prefect_server, tmp_path):
    cid = new_id("logs")
    config = write_config(tmp_path, [{"id": cid, "type": "log_errors", "container": backend.name, "tail": 120,
                                      "threshold": 2, "mitigations": []}], owner="ops on-call (Bo)")
    backend.access_log(ok=97, errors=3)
    rows = _detected(config, 2)
    assert "3 errors in 100 requests (3.0%; budget 1.0%)" in rows[0]["detail"]
    started = backend.container.attrs["State"]["StartedAt"]
    result = incident_respond_flow(check_id=cid, config=config)
    assert result["status"] == "escalated" and _actions(result) == [("restart_container", False, False)]
    assert "disabled" in result["actions"][0]["detail"]
    assert backend.container.attrs["State"]["StartedAt"] == started  # not restarted
    assert "ops on-call (Bo) must act" in open(result["report"]).read()
    backend.access_log(ok=150)  # the errors stop: the last 120 lines are all 200s
    report = _resolved(config, cid, result, most=2)
    _timeline(report, "first failed probe", "detected", "mitigation restart_container", "escalated", "recovered")


@pytest.fixture
def leaked_sessions(database):
    """Six sessions a client left idle in a transaction (a leaking pool), and the baseline connection count."""
    with psycopg.connect(database) as conn:
        (baseline,), = conn.execute("SELECT count(*) FROM pg_stat_activity").fetchall()
    held = [psycopg.connect(database) for _ in range(6)]
    for conn in held:
        conn.execute("SELECT 1")  # opens the transaction, then idles
    yield held, baseline
    for conn in held:
        conn.close()


def test_connections_exhausted_by_idle_transactions_are_terminated(database, leaked_sessions, prefect_server,
                                                                    tmp_path, monkeypatch):
    held, baseline = leaked_sessions
    monkeypatch.setenv("MONITOR_TEST_DB", database)
    cid = new_id("conns")
    alert = baseline + 4  # the six leaked sessions cross it; background workers coming and going do not
    config = write_config(tmp_path, [{"id": cid, "type": "postgres", "database_url_env": "MONITOR_TEST_DB",
                                      "max_connections_alert": alert, "idle_in_transaction_seconds": 0,
                                      "threshold": 2, "mitigations": ["terminate_blockers"]}])
    rows = _detected(config, 2)
    assert f"(alert at {alert})" in rows[0]["detail"] and "idle in transaction" in rows[0]["detail"]
    result = incident_respond_flow(check_id=cid, config=config)
    assert result["status"] == "mitigated" and _actions(result) == [("terminate_blockers", True, True)]
    assert "terminated" in result["actions"][0]["detail"]
    assert all(_gone(conn) for conn in held)
    report = _resolved(config, cid, result, most=2)
    _timeline(report, "first failed probe", "detected", "mitigation terminate_blockers", "mitigated", "recovered")


def _gone(conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False
