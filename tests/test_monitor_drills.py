"""Chaos drills against a real Docker engine, real PostgreSQL and a real Prefect server (test harness).

Each drill runs the monitor pass and the incident flows directly (the deployments' triggers are checked in
test_monitor_triggers.py): detection within ``threshold`` passes, exactly one incident, the right mitigation,
a report with a real timeline, resolution.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from charhub_ops.monitoring.windows import AdHocWindow
from flows.incident import incident_resolve_flow, incident_respond_flow
from tests.harness.monitor import (
    backend_fixture,  # noqa: F401 - fixture
    http_check,
    passes,
    small_tmpfs_fixture,  # noqa: F401 - fixture
    store,
    write_config,
)
from tests.harness.monitor import new_id as _id
from tests.harness.webhook import notification_hook


def test_killed_backend_detected_restarted_documented_resolved(backend, prefect_server, tmp_path, monkeypatch):
    with notification_hook(monkeypatch, _id("ops-alerts")) as received:  # sets CHARHUB_OPS_NOTIFY_BLOCK
        _killed_backend(backend, tmp_path, received)


def _killed_backend(backend, tmp_path, received):
    cid = _id("backend")
    config = write_config(tmp_path, [http_check(backend, cid)])
    assert passes(config, 1)[0]["ok"]
    backend.container.kill()
    rows = passes(config, 3)
    assert [r["streak"] for r in rows] == [1, 2, 3] and [r["state"] for r in rows] == ["up", "up", "down"]
    assert [("charhub.service.down" if "down" in r["events"] else None) for r in rows] == [None, None,
                                                                                           "charhub.service.down"]
    result = incident_respond_flow(check_id=cid, config=config)
    assert result["status"] == "mitigated"
    assert [(a["action"], a["ok"], a["ran"]) for a in result["actions"]] == [("restart_container", True, True)]
    assert backend.container.status == "running"
    again = incident_respond_flow(check_id=cid, config=config)  # a second down attaches: exactly one incident
    assert again["incident_id"] == result["incident_id"]
    assert [i.id for i in store().incidents() if i.check_id == cid] == [result["incident_id"]]
    rows = passes(config, 2)
    assert rows[-1]["state"] == "up" and "recovered" in rows[-1]["events"]
    closed = incident_resolve_flow(check_id=cid, config=config)
    assert closed["resolved"] and closed["incident_id"] == result["incident_id"]
    report = open(closed["report"]).read()
    for section in ("**Date**", "**Severity**: Critical (respond now)", "**Duration**", "**Status**: Resolved",
                    "## Summary",
                    "## Timeline", "## Detection", "## Root Cause", "Preliminary", "## Resolution",
                    "## Impact Analysis", "### Immediate", "### Short-term", "### Long-term", "## Lessons Learned",
                    "## Related Documents", "restart_container", "Last 50 log lines", "### Recent events",
                    "### Recent flow runs", "### Disk"):
        assert section in report, section
    timeline = [line for line in report.splitlines() if line.startswith("| 20")]
    assert [t for t in timeline if "first failed probe" in t] and [t for t in timeline if "recovered" in t]
    times = [t.split('|')[1] for t in timeline]
    assert times == sorted(times)  # real UTC times, in order
    assert any("opened (critical)" in b and "respond now" in b for b in received)
    assert any("mitigated" in b for b in received) and any("resolved" in b for b in received)


def test_backend_answering_an_error_is_restarted(backend, prefect_server, tmp_path):
    cid = _id("api")
    config = write_config(tmp_path, [http_check(backend, cid)])
    backend.break_health()
    rows = passes(config, 3)
    assert "status 404 (expected 200)" in rows[0]["detail"] and rows[-1]["state"] == "down"
    result = incident_respond_flow(check_id=cid, config=config)
    assert result["status"] == "mitigated" and result["actions"][0]["ran"]  # the restart recreated the file
    assert passes(config, 2)[-1]["state"] == "up"


def test_disabled_mitigation_is_reported_not_run_and_escalated(backend, prefect_server, tmp_path):
    cid = _id("no_mit")  # an id with "_": artifact keys may not have one
    config = write_config(tmp_path, [http_check(backend, cid, mitigations=[])], owner="ops on-call (Ana)")
    backend.container.kill()
    passes(config, 3)
    result = incident_respond_flow(check_id=cid, config=config)
    (action,) = result["actions"]
    assert (action["action"], action["ran"], action["ok"]) == ("restart_container", False, False)
    assert "disabled" in action["detail"] and result["status"] == "escalated"
    assert backend.container.status == "exited"
    assert "ops on-call (Ana) must act" in open(result["report"]).read()


def test_restart_budget_is_respected(backend, prefect_server, tmp_path):
    cid = _id("budget")
    config = write_config(tmp_path, [http_check(backend, cid)], restart_budget_per_hour=1)
    store().save_restarts(backend.name, [datetime.now(UTC) - timedelta(minutes=10)])  # the container's budget
    backend.container.kill()
    passes(config, 3)
    result = incident_respond_flow(check_id=cid, config=config)
    assert not result["actions"][0]["ran"] and "over budget" in result["actions"][0]["detail"]
    assert result["status"] == "escalated" and backend.container.status == "exited"


def test_flapping_check_opens_one_incident(backend, prefect_server, tmp_path):
    cid = _id("flap")
    config = write_config(tmp_path, [http_check(backend, cid, mitigations=[])])
    events = []
    for healthy in (False, False, False, True, False, True, False, True, False):
        backend.fix_health() if healthy else backend.break_health()
        row = passes(config, 1)[0]
        events += row["events"]
        if "down" in row["events"] or row["state"] == "down":
            incident_respond_flow(check_id=cid, config=config)  # what each down trigger would start
    assert events.count("down") == 1 and "recovered" not in events
    assert len([i for i in store().incidents() if i.check_id == cid]) == 1


def test_maintenance_window_opens_no_incident(backend, prefect_server, tmp_path):
    cid = _id("maint")
    config = write_config(tmp_path, [http_check(backend, cid)])
    now = datetime.now(UTC)
    store().save_window(AdHocWindow(id=_id("w"), checks=[cid], start=now - timedelta(minutes=1),
                                    end=now + timedelta(minutes=30), reason="deploy", by="test"))
    backend.container.kill()
    rows = passes(config, 4)
    assert [r["state"] for r in rows] == ["maintenance"] * 4 and not any("down" in r["events"] for r in rows)
    result = incident_respond_flow(check_id=cid, config=config)
    assert result["incident_id"] is None and "deploy" in result["maintenance"][0]
    assert not [i for i in store().incidents() if i.check_id == cid]


@pytest.fixture
def locked_table(database):
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int); INSERT INTO accounts VALUES (1, 0)")
    holder = psycopg.connect(database)
    holder.execute("UPDATE accounts SET balance = 1 WHERE id = 1")  # open transaction, row lock held, then idle
    done = threading.Event()

    def writer():
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("UPDATE accounts SET balance = 2 WHERE id = 1")
        done.set()

    threading.Thread(target=writer, daemon=True).start()
    yield holder, done
    holder.close()


def test_session_blocking_writers_is_terminated(database, locked_table, prefect_server, tmp_path, monkeypatch):
    holder, writer_done = locked_table
    secret = f"Pw{uuid.uuid4().hex[:10]}"  # trust authentication ignores it; nothing may show it
    monkeypatch.setenv("MONITOR_TEST_DB", database.replace("postgres@", f"postgres:{secret}@"))
    cid = _id("pg")
    config = write_config(tmp_path, [{"id": cid, "type": "postgres", "database_url_env": "MONITOR_TEST_DB",
                                      "lock_wait_seconds": 0, "mitigations": ["terminate_blockers"]}])
    rows = passes(config, 3)
    assert "waiting on a lock" in rows[0]["detail"] and rows[-1]["state"] == "down"
    result = incident_respond_flow(check_id=cid, config=config)
    assert result["status"] == "mitigated" and "terminated" in result["actions"][0]["detail"]
    assert writer_done.wait(10)
    assert holder.broken or holder.closed or _dead(holder)
    report = open(result["report"]).read()
    assert "Blocking chains" in report and secret not in report
    kept = store().incident(result["incident_id"]).model_dump_json() + store().check(cid).model_dump_json()
    assert secret not in kept and secret not in str(rows)


def _dead(conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_disk_level_crossed_emits_disk_high_and_escalates_without_cleanup(small_tmpfs, prefect_server, tmp_path):
    cid = _id("disk")
    config = write_config(tmp_path, [{"id": cid, "type": "disk", "paths": [str(small_tmpfs)], "threshold": 1,
                                      "recovery_threshold": 1, "mitigations": ["docker_cleanup"]}])
    (small_tmpfs / "fill").write_bytes(b"x" * int(1.5 * 2**20))  # 75 %: past the clean level only
    row = passes(config, 1)[0]
    assert row["ok"] and "disk_high" in row["events"]
    (small_tmpfs / "more").write_bytes(b"x" * int(0.25 * 2**20))  # ~88 %: critical
    row = passes(config, 1)[0]
    assert not row["ok"] and row["state"] == "down" and "disk_high" in row["events"]
    result = incident_respond_flow(check_id=cid, config=config)
    assert not result["actions"][0]["ran"] and "no cleanup deployment" in result["actions"][0]["detail"]
    assert result["status"] == "escalated"
    for f in small_tmpfs.iterdir():
        f.unlink()
    assert "recovered" in passes(config, 1)[0]["events"]
    assert incident_resolve_flow(check_id=cid, config=config)["resolved"]


def test_backups_overdue(tmp_path, prefect_server, monkeypatch):
    from charhub_ops.storage import LocalStorage
    from tests.test_restore import _manifest

    repo = LocalStorage(tmp_path / "repo")
    old = _manifest("20261128T023000Z-0001", datetime.now(UTC) - timedelta(hours=30))
    old.backup_id = "20261128T023000Z-0001"
    repo.put_bytes(f"db/{old.backup_id}/manifest.json", old.model_dump_json().encode())
    cid = _id("backups")
    config = write_config(tmp_path, [{"id": cid, "type": "backups", "repository": f"file://{tmp_path}/repo",
                                      "threshold": 1}])
    row = passes(config, 1)[0]
    assert row["state"] == "down" and "h old (> 26 h)" in row["detail"]
    result = incident_respond_flow(check_id=cid, config=config)
    assert result["status"] == "escalated" and result["actions"] == []
    overdue = incident_respond_flow(check_id=_id("backup-overdue"), config=config,
                                    detail="no charhub.backup.completed event within 26 h")  # the proactive trigger
    assert overdue["incident_id"] and overdue["status"] == "escalated"
