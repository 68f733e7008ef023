"""Our own monitor never kills our own backup (issue 16, item 7): a backup slower than the postgres check's
``idle_in_transaction_seconds`` and ``long_query_seconds``, with the check and its ``terminate_blockers``
mitigation enabled, completes, and no incident opens; its sessions show in the diagnosis as ours. A stranger's
session, even one calling itself ``pg_dump``, is still judged and terminated. Real PostgreSQL and Prefect server.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from charhub_ops.backup.engine import dump_database, preflight
from charhub_ops.monitoring import pgfacts
from charhub_ops.monitoring.config import load_config
from charhub_ops.monitoring.diagnose import diagnose
from charhub_ops.monitoring.mitigate import terminate_action
from charhub_ops.monitoring.state import CheckState
from charhub_ops.pgurl import parse_pg_url
from charhub_ops.storage.memory import MemoryStorage
from flows.incident import incident_respond_flow
from tests.harness.monitor import new_id, passes, store, write_config


class GatedStorage(MemoryStorage):
    """A repository whose upload waits for ``gate``: the backup's snapshot stays open as long as the test wants."""

    def __init__(self) -> None:
        super().__init__("gated")
        self.gate = threading.Event()

    def put_stream(self, key, stream, **kw):
        assert self.gate.wait(120), "the test never opened the gate"
        return super().put_stream(key, stream, **kw)


@pytest.fixture
def rows_db(database):
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")
    return database


def _backup_in_background(url: str, storage: GatedStorage) -> tuple[threading.Thread, dict]:
    out: dict = {}
    pg_url = parse_pg_url(url)

    def run() -> None:
        try:
            pre = preflight(pg_url, None)
            out["result"] = dump_database(storage, pg_url, pre, pg_url.dbname, "20261204T000000Z-ours", recipients=[])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _wait_idle_in_transaction(url: str, seconds: float) -> None:
    """Until a session of the database (the backup's snapshot) is idle in transaction for ``seconds``."""
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND state = 'idle in transaction' AND now() - state_change > make_interval(secs => %s)",
                            [seconds]).fetchone()[0]:
                return
            time.sleep(0.2)
    raise TimeoutError("the backup's snapshot session never went idle in transaction")


def test_a_backup_slower_than_the_limits_completes_and_opens_no_incident(rows_db, prefect_server, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("OURS_TEST_DB", rows_db)
    cid = new_id("pg-ours")
    config = write_config(tmp_path, [{"id": cid, "type": "postgres", "database_url_env": "OURS_TEST_DB",
                                      "idle_in_transaction_seconds": 1, "long_query_seconds": 1,
                                      "lock_wait_seconds": 1, "threshold": 1,
                                      "mitigations": ["terminate_blockers"]}])
    storage = GatedStorage()
    thread, out = _backup_in_background(rows_db, storage)
    try:
        _wait_idle_in_transaction(rows_db, 1.5)
        row = passes(config, 1)[0]
        assert row["ok"] and row["state"] == "up", row["detail"]
        assert "session(s) of charhub-ops not judged" in row["detail"]
        check = load_config(config).check(cid)
        action = terminate_action(check, rows_db, lambda: None)  # the mitigation itself, called directly
        assert not action.ran and "pre-condition not met" in action.detail
        assert incident_respond_flow(check_id=cid, config=config)["incident_id"] is None
        apps = {r["application"] for r in pgfacts.sessions(rows_db)[0]}
        assert {"charhub-ops", "charhub-ops:pg_dump"} <= apps, apps
        report = diagnose(check, CheckState(check_id=cid), database_url=rows_db, log_lines=0, recent_runs=[],
                          secrets=[])["PostgreSQL"]
        assert "charhub-ops:pg_dump (ours)" in report and "charhub-ops (ours)" in report
    finally:
        storage.gate.set()
        thread.join(120)
    assert "error" not in out, out.get("error")
    assert out["result"].tables[0].rows == 20000 and storage.objects
    assert not [i for i in store().incidents() if i.check_id == cid]


def test_a_strangers_session_named_pg_dump_is_still_judged_and_terminated(database, prefect_server, tmp_path):
    stranger = psycopg.connect(database, application_name="pg_dump")
    stranger.execute("SELECT 1")  # BEGIN … then idle in transaction
    try:
        time.sleep(1.5)
        check = load_config(write_config(tmp_path, [{"id": "pg", "type": "postgres", "database_url_env": "X",
                                                     "idle_in_transaction_seconds": 1}])).check("pg")
        found = pgfacts.blockers(database, check.lock_wait_seconds, check.idle_in_transaction_seconds)
        assert [why for why in found.values() if "idle in transaction" in why]
        pgfacts.signal_backends(database, list(found), "terminate")
        with pytest.raises(psycopg.OperationalError):
            stranger.execute("SELECT 1")
    finally:
        stranger.close()
