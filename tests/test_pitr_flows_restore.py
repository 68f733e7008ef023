"""The pgBackRest drill and restores as flows, on the session Prefect server and a real archiving cluster:
``pitr-verify`` records its verdict (artifact + ``charhub.pitr.verify.completed``/``failed``), ``pitr-restore``
and ``pitr-recover-table`` show their plan and stop on a dry run, then act."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from charhub_ops.errors import VerificationError
from tests.harness.pitr import start_archiving_cluster
from tests.test_backup_flow import _wait_for_event
from tests.test_pitr_flows import _artifact

PASSPHRASE = "restore-flows-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def cluster():
    cluster = start_archiving_cluster(f"rflows{uuid.uuid4().hex[:6]}")
    with cluster.connect() as conn:
        conn.execute("CREATE DATABASE app")
    with cluster.connect("app") as conn:
        conn.execute('CREATE TABLE "Credit" (id int PRIMARY KEY, amount numeric, note text)')
        conn.execute("""INSERT INTO "Credit" SELECT g, g * 1.5, 'n' || g FROM generate_series(1, 300) g""")
    yield cluster
    cluster.remove()


@pytest.fixture
def env(cluster, prefect_server, monkeypatch, tmp_path):
    from charhub_ops.settings import load_settings
    from tasks.pitr import pitr_setup, resolve_pitr_config

    for name, value in cluster.settings_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", cluster.url("app"))
    monkeypatch.setenv("CHARHUB_OPS_PITR_CIPHER_PASS", PASSPHRASE)
    monkeypatch.setenv("CHARHUB_OPS_WORK_DIR", str(cluster.base))
    pitr_setup.fn(resolve_pitr_config.fn(load_settings(), None))
    if not cluster.pgbackrest("info", "--output=json").stdout.count('"label"'):
        from flows.pitr import pitr_backup_flow

        pitr_backup_flow(kind="full")
    return cluster


def test_verify_flow_records_the_verdict(env, prefect_server):
    from flows.pitr_restore import pitr_verify_flow

    since = datetime.now(UTC)
    state = pitr_verify_flow(return_state=True)
    verdict = state.result()
    assert verdict["ok"] and verdict["tables"] == 1 and verdict["rows"] == 300 and verdict["hashed_tables"] == 1
    event = _wait_for_event(prefect_server, "charhub.pitr.verify.completed", f"charhub.pitr.{env.stanza}", since)
    assert event["payload"]["restore_point"] == verdict["restore_point"] and event["payload"]["ok"] is True
    report = _artifact("pitr-verify-report", state.state_details.flow_run_id)
    assert ": ok" in report and verdict["restore_point"] in report


def test_verify_flow_mismatch_fails_the_run_and_emits_failed(env, prefect_server, monkeypatch):
    from charhub_ops.pitr import verify as verify_mod
    from flows.pitr_restore import pitr_verify_flow

    real = verify_mod.snapshot_stats

    def wrong(session, limit):  # the live snapshot claims one row more than the copy has
        return [s.model_copy(update={"rows": s.rows + 1}) for s in real(session, limit)]

    monkeypatch.setattr(verify_mod, "snapshot_stats", wrong)
    since = datetime.now(UTC)
    with pytest.raises(VerificationError, match="mismatch"):
        pitr_verify_flow()
    event = _wait_for_event(prefect_server, "charhub.pitr.verify.failed", f"charhub.pitr.{env.stanza}", since)
    assert event["payload"]["verdict"] is True and event["payload"]["ok"] is False
    assert event["payload"]["mismatches"] == ["public.Credit: 300 rows, live snapshot says 301"]


def test_recover_table_flow_dry_run_first_then_brings_the_rows_back(env, prefect_server):
    from flows.pitr_restore import pitr_recover_table_flow

    time.sleep(1.1)
    at = datetime.now(UTC)
    time.sleep(1.1)
    with env.connect("app") as conn:
        conn.execute('DELETE FROM "Credit" WHERE id > 100')  # the bad DELETE
        conn.execute("SELECT pg_switch_wal()")
    plan = pitr_recover_table_flow(table="Credit", at=at)
    assert plan["dry_run"] and plan["new_table"] == f"public.Credit_recovered_{at:%Y%m%d%H%M%S}"
    with env.connect("app") as conn:
        assert conn.execute("SELECT to_regclass(%s)", (f'"{plan["new_table"][7:]}"',)).fetchone() == (None,)
    done = pitr_recover_table_flow(table="Credit", at=at, dry_run=False)
    assert done["rows"] == 300
    with env.connect("app") as conn:
        (recovered,) = conn.execute(f'SELECT count(*) FROM "{plan["new_table"][7:]}"').fetchone()
        (live,) = conn.execute('SELECT count(*) FROM "Credit"').fetchone()
    assert (recovered, live) == (300, 100)  # the live table keeps its newer state


def test_restore_flow_plans_then_restores_into_a_new_directory(env, prefect_server):
    from flows.pitr_restore import pitr_restore_flow

    into = env.base / "restored"
    plan = pitr_restore_flow(target={"into": str(into)})
    assert plan["dry_run"] and plan["target"] == "latest" and not into.exists()
    done = pitr_restore_flow(target={"into": str(into)}, dry_run=False)
    assert done["into"] == str(into) and (into / "PG_VERSION").is_file()
    with pytest.raises(Exception, match="live data directory"):
        pitr_restore_flow(target={"into": str(env.datadir)}, dry_run=False)
