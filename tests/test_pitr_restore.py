"""`pitr restore` against a real archiving cluster and a posix pgBackRest repository (tests/harness/pitr.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from charhub_ops.errors import ConfigError, DatabaseError
from charhub_ops.pitr.restore import Target, check_into, data_owner, restore_local, restore_options, target_text
from charhub_ops.pitr.scratch import LocalScratch, scratch_copy
from tests.pitr_restore_support import (
    archive_now,
    backup,
    base_url,
    core,
    new_cluster,
    pitr_settings,
)


@pytest.fixture(scope="module")
def cluster():
    c = new_cluster("restore")
    backup(c, "full")
    yield c
    c.remove()


@pytest.mark.parametrize(("target", "expected"), [
    (Target.latest(), ["--type=default"]),
    (Target.at(datetime(2026, 12, 5, 1, 30, tzinfo=UTC)),
     ["--type=time", "--target=2026-12-05 01:30:00+00", "--target-action=promote"]),
    (Target.point("drill-1"), ["--type=name", "--target=drill-1", "--target-action=promote"]),
])
def test_target_options(target, expected):
    assert target.options() == expected
    assert restore_options(target, "/new")[0] == "--pg1-path=/new"
    assert restore_options(target, "/new")[-1] == "--archive-mode=off"
    assert not any(o.startswith(("--delta", "--force")) for o in restore_options(target, "/new"))


def test_target_time_is_written_in_utc_with_its_fraction():
    from datetime import timedelta, timezone

    when = datetime(2026, 12, 5, 3, 30, 0, 250000, tzinfo=timezone(timedelta(hours=2)))
    assert target_text(when) == "2026-12-05 01:30:00.250000+00"
    with pytest.raises(ConfigError, match="time zone"):
        Target.at(datetime(2026, 12, 5, 1, 30))


def test_check_into_refuses_the_live_directory_and_non_empty_ones(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for bad, why in ((live, "live data directory"), (live / "sub", "live data directory"),
                     (tmp_path, "live data directory"), (tmp_path / "full", "not empty")):
        with pytest.raises(ConfigError, match=f"--into: .*{why}"):
            check_into(bad, live)
    assert check_into(tmp_path / "new", live) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert check_into(tmp_path / "empty", live) == tmp_path / "empty"


def test_restore_refuses_the_live_directory_without_touching_it(cluster):
    before = sorted(p.name for p in cluster.datadir.iterdir())
    with pytest.raises(ConfigError, match="--into: .*live data directory"):
        restore_local(core(cluster).pgb, Target.latest(), cluster.datadir)
    assert sorted(p.name for p in cluster.datadir.iterdir()) == before
    with cluster.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _rows(scratch: LocalScratch, cluster) -> list[str]:
    import psycopg

    with psycopg.connect(scratch.url(base_url(cluster)).conninfo) as conn:
        return [r[0] for r in conn.execute("SELECT note FROM pit ORDER BY id")]


def test_point_in_time_restore_has_rows_before_the_target_and_not_after(cluster, tmp_path):
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE pit (id serial PRIMARY KEY, note text)")
        conn.execute("INSERT INTO pit (note) VALUES ('before')")
        time.sleep(1.1)
        target = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(1.1)
        conn.execute("INSERT INTO pit (note) VALUES ('after')")
    archive_now(cluster)
    pgb = core(cluster).pgb
    with scratch_copy(pgb, Target.at(target), base_url(cluster), str(cluster.base)) as (sc, res):
        assert _rows(sc, cluster) == ["before"]
        assert res.target.startswith("time ")
        datadir = sc.datadir
    assert not datadir.exists()  # always removed
    with scratch_copy(pgb, Target.latest(), base_url(cluster), str(cluster.base)) as (sc, _):
        assert _rows(sc, cluster) == ["before", "after"]


def test_restored_copy_does_not_archive_into_the_stanza(cluster, tmp_path):
    new = cluster.base / "copy"
    restore_local(core(cluster).pgb, Target.latest(), new)
    assert "archive_mode = 'off'" in (new / "postgresql.auto.conf").read_text()
    scratch = LocalScratch(new, data_owner(pitr_settings(cluster)))
    try:
        scratch.start(base_url(cluster))
        import psycopg

        with psycopg.connect(scratch.url(base_url(cluster)).conninfo, autocommit=True) as conn:
            assert conn.execute("SHOW archive_mode").fetchone()[0] == "off"
    finally:
        scratch.remove()


def test_full_diff_incr_chain_restores_the_newest_writes(cluster):
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE chain (step text)")
        conn.execute("INSERT INTO chain VALUES ('after-full')")
        diff = backup(cluster, "diff")
        conn.execute("INSERT INTO chain VALUES ('after-diff')")
        incr = backup(cluster, "incr")
        conn.execute("INSERT INTO chain VALUES ('after-incr')")
    assert (diff.type, incr.type, incr.prior) == ("diff", "incr", diff.label)
    archive_now(cluster)
    with scratch_copy(core(cluster).pgb, Target.latest(), base_url(cluster), str(cluster.base)) as (sc, _):
        import psycopg

        with psycopg.connect(sc.url(base_url(cluster)).conninfo) as conn:
            steps = [r[0] for r in conn.execute("SELECT step FROM chain ORDER BY step")]
    assert steps == ["after-diff", "after-full", "after-incr"]


def test_missing_stanza_is_one_line(cluster):
    from charhub_ops.pitr.command import PgBackRest

    pgb = core(cluster).pgb
    wrong = PgBackRest(pgb.pitr.model_copy(update={"stanza": "nosuchstanza"}))
    with pytest.raises(DatabaseError) as caught:
        restore_local(wrong, Target.latest(), cluster.base / "never")
    message = str(caught.value)
    assert "\n" not in message and "stanza" in message, message
    assert not (cluster.base / "never").exists()


@pytest.mark.parametrize(("module", "names"), [
    ("charhub_ops.pitr.restore", {"Target", "RestoreResult", "preflight", "check_into", "restore_options",
                                  "restore_local", "restore_into", "data_owner", "target_text"}),
    ("charhub_ops.pitr.scratch", {"LocalScratch", "scratch_copy", "free_port", "last_fatal", "server_options"}),
    ("charhub_ops.pitr.scratch_container", {"ScratchContainer", "restore_container"}),
    ("charhub_ops.pitr.verify", {"VerifyResult", "verify", "restore_point_name", "snapshot_stats", "write_counters",
                                 "STATS_SETTLE"}),
    ("charhub_ops.pitr.recover", {"RecoverPlan", "RecoverResult", "split_table", "recovered_name", "plan_recovery",
                                  "recover_table"}),
])
def test_restore_part_api_is_pinned(module, names):
    import importlib

    mod = importlib.import_module(module)
    assert set(mod.__all__) == names and all(hasattr(mod, n) for n in names)
