"""Drill (issue 16, item 22): the Prefect server goes away in the middle of a backup holding ``postgres-<db>``.

A real ``prefect server`` (SQLite under its PREFECT_HOME; leases in memory, Prefect's default, so the restart
forgets the lease while its slot stays counted) and ``charhub-ops backup`` in its own process. The dump is held
inside its locked section by a session keeping an ACCESS EXCLUSIVE lock on the table: the backup waits, alive,
as it would while streaming a big table. Scaled from the issue's "60 s outage in a two-minute backup" to keep
the suite short: lease 100 s (renewed every 25 s, as 300 s is every 75 s), the server stopped for 25 s plus its
start-up time, so at least one renewal meets a dead API; the backup then runs on past one more renewal.
Expected: the backup completes, exactly one backup is listed, the flow run's final state on the server is
Completed, and the lock is free again. Before tasks/leases.py the backup completed but ``postgres-<db>`` kept
its slot (active_slots 1): Prefect's release of a forgotten lease is a no-op, and every later backup, migrate,
verify or cleanup of that database would have waited forever.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.harness.prefect_server import kill, start_prefect_server

BIN = Path(sys.executable).parent
LEASE = 100
OUTAGE = 25


def _get(api: str, path: str, body: dict | None = None):
    import httpx

    if body is None:
        return httpx.get(api + path, timeout=10).raise_for_status().json()
    return httpx.post(api + path, json=body, timeout=10).raise_for_status().json()


def _wait(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def _dump_waiting(url: str, dbname: str) -> bool:
    """The backup's sessions (its snapshot's row counts, then pg_dump) wait for the blocker's lock."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                            (dbname,)).fetchone()[0] > 0


@pytest.fixture
def drill_db(pg):
    import uuid

    name = "outage_" + uuid.uuid4().hex[:8]
    url = pg.create_database(name)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5000) g")
    return name, url


def test_backup_holding_the_lock_survives_a_prefect_server_outage(drill_db, tmp_path):
    dbname, url = drill_db
    home = tmp_path / "server"
    home.mkdir()
    server, api = start_prefect_server(home)
    port = int(api.rsplit(":", 1)[1].split("/")[0])
    blocker = psycopg.connect(url)
    blocker.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")  # held until commit below
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client"),
           "CHARHUB_OPS_DATABASE_URL": url, "CHARHUB_OPS_REPOSITORY": f"file://{tmp_path}/repo",
           "CHARHUB_OPS_LOCK_LEASE_SECONDS": str(LEASE), "CHARHUB_OPS_TASK_RETRIES": "1",
           "CHARHUB_OPS_TASK_RETRY_DELAY": "1"}
    backup = subprocess.Popen([str(BIN / "charhub-ops"), "backup", "--json"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    output: dict[str, str] = {}
    reader = threading.Thread(target=lambda: output.update(zip(("out", "err"), backup.communicate(), strict=True)))
    reader.start()
    try:
        _wait(lambda: _dump_waiting(url, dbname), "the backup never waited inside the section", timeout=240)
        limit = _get(api, f"/v2/concurrency_limits/postgres-{dbname}")
        assert limit["active_slots"] == 1, limit

        server.send_signal(signal.SIGTERM)  # the outage: the whole server process goes away
        server.wait(timeout=30)
        time.sleep(OUTAGE)
        server, _ = start_prefect_server(home, port=port)
        time.sleep(LEASE / 4 + 5)  # one renewal after the server is back
        assert backup.poll() is None, "the backup stopped during the outage"
        blocker.commit()
        reader.join(timeout=300)
        assert backup.returncode == 0, output.get("err", "")[-3000:]

        summary = json.loads(output["out"])
        listed = subprocess.run([str(BIN / "charhub-ops"), "backups", "list", "--json"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert [b["backup_id"] for b in json.loads(listed.stdout)] == [summary["backup_id"]], listed.stderr
        (run,) = _get(api, "/flow_runs/filter", {"flows": {"name": {"any_": ["backup"]}}})
        assert run["state_type"] == "COMPLETED", run["state_name"]
        assert _get(api, f"/v2/concurrency_limits/postgres-{dbname}")["active_slots"] == 0
        err = output["err"]  # the run's log: the outage seen, the forgotten lease kept (in-memory lease storage)
        assert "Prefect API unreachable" in err and "kept without a lease" in err, err[-3000:]
    finally:
        blocker.close()
        if backup.poll() is None:
            kill(backup)
        reader.join(timeout=30)
        kill(server)


@pytest.fixture
def one_slot(prefect_server) -> str:
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = "lease-" + uuid.uuid4().hex[:8]
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    return name


def _expire(keeper, client) -> None:
    """What a long outage does: the lease may have expired and the server repossessed its slot."""
    keeper.valid_until = 0.0
    client.release_concurrency_slots_with_lease(lease_id=keeper.lease_id)


def _active(client, name: str) -> int:
    return client.read_global_concurrency_limit_by_name(name).active_slots


def test_an_expired_lease_is_taken_again_when_the_slot_is_free(one_slot):
    import logging

    from prefect.client.orchestration import get_client

    from tasks.leases import held_slot

    with get_client(sync_client=True) as client:
        with held_slot(one_slot, 60, logging.getLogger("test")) as keeper:
            first = keeper.lease_id
            _expire(keeper, client)
            _wait(lambda: keeper.lease_id != first, "the lease was not taken again", timeout=45)
            assert _active(client, one_slot) == 1
        assert _active(client, one_slot) == 0


def test_an_expired_lease_whose_slot_another_run_took_stops_the_section(one_slot):
    import logging

    from prefect.client.orchestration import get_client

    from tasks.leases import LockLostError, held_slot

    with get_client(sync_client=True) as client:
        with pytest.raises(LockLostError, match=f"{one_slot}: lock lost") as lost:
            with held_slot(one_slot, 60, logging.getLogger("test")) as keeper:
                _expire(keeper, client)
                other = client.increment_concurrency_slots_with_lease([one_slot], 1, "concurrency", 60)
                deadline = time.monotonic() + 45
                while time.monotonic() < deadline:  # the work of the section, interrupted by the keeper
                    time.sleep(0.1)
        assert lost.value.transient
        assert _active(client, one_slot) == 1  # the other run's slot, untouched
        client.release_concurrency_slots_with_lease(lease_id=other.json()["lease_id"])
