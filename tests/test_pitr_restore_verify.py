"""`pitr verify`: restore to a named point into a scratch instance and compare it with the live snapshot."""

from __future__ import annotations

import threading
import time

import pytest

from charhub_ops.pitr import verify as verify_mod
from charhub_ops.pitr.verify import verify
from tests.pitr_restore_support import backup, base_url, core, new_cluster


@pytest.fixture(scope="module")
def cluster():
    c = new_cluster("verify")
    with c.connect() as conn:
        conn.execute("CREATE DATABASE app")
    with c.connect("app") as conn:
        conn.execute('CREATE TABLE "User" (id int PRIMARY KEY, name text, born date, score float8)')
        conn.execute("""INSERT INTO "User" SELECT g, 'u' || g, date '2000-01-01' + g, g / 3.0
                        FROM generate_series(1, 500) g""")
        conn.execute("CREATE TABLE busy (id serial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        conn.execute("CREATE TABLE quiet (k text PRIMARY KEY)")
        conn.execute("INSERT INTO quiet VALUES ('a'), ('b')")
    backup(c, "full")
    yield c
    c.remove()


def test_verify_matches_and_reports_tables_written_during_the_drill(cluster):
    stop = threading.Event()

    def writer() -> None:
        with cluster.connect("app") as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO busy DEFAULT VALUES")
                time.sleep(0.2)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        result = verify(core(cluster).pgb, base_url(cluster, "app"), hash_limit_bytes=32 << 20,
                        work_dir=str(cluster.base))
    finally:
        stop.set()
        thread.join()
    assert result.ok, result.mismatches
    assert result.written_during_drill == ("public.busy",)
    assert (result.tables, result.hashed_tables) == (2, 2)
    assert result.rows == 502 and result.restore_point.startswith("charhub-ops-verify-")
    assert result.target == f"restore point {result.restore_point}" and result.backup_label
    assert not any(p.name.startswith("charhub-ops-pitr-scratch-") for p in cluster.base.iterdir())


def test_verify_reports_a_mismatch(cluster, monkeypatch):
    real = verify_mod.snapshot_stats

    def wrong(session, limit):  # the live snapshot says one row more than the copy has
        stats = real(session, limit)
        return [s.model_copy(update={"rows": s.rows + 1}) if s.name == "quiet" else s for s in stats]

    monkeypatch.setattr(verify_mod, "snapshot_stats", wrong)
    result = verify(core(cluster).pgb, base_url(cluster, "app"), hash_limit_bytes=0, work_dir=str(cluster.base))
    assert not result.ok
    assert result.mismatches == ("public.quiet: 2 rows, live snapshot says 3",)
    assert result.hashed_tables == 0
