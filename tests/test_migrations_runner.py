"""The native runner against real PostgreSQL: Prisma's ledger rows, failures, drift, the advisory lock,
lock-timeout retries and CONCURRENTLY migrations."""

from __future__ import annotations

import hashlib
import re
import threading
import time

import psycopg
import pytest

from charhub_ops.errors import ConfigError, DatabaseError
from charhub_ops.migrations import ledger
from charhub_ops.migrations.ledger import read_migrations
from charhub_ops.migrations.runner import LOCK_KEY, RunnerOptions, current_plan, migrate_locked
from charhub_ops.pgurl import parse_pg_url
from tests.harness.migrations import CHARHUB, write_migrations

FAST = RunnerOptions(lock_wait=1.0, lock_timeout=2.0, lock_retries=8, statement_timeout=30.0, poll=0.1)
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def run(url: str, root, opts: RunnerOptions = FAST, allow_drift: bool = False):
    files, paths = read_migrations(root)
    return migrate_locked(parse_pg_url(url), files, paths, opts, allow_drift=allow_drift)


def rows(url: str) -> list[dict]:
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM _prisma_migrations ORDER BY started_at, migration_name").fetchall()


def test_applies_once_with_prisma_rows_and_rerun_is_a_noop(database, tmp_path):
    root = write_migrations(tmp_path / "migrations", CHARHUB)
    result = run(database, root)
    assert [a.name for a in result.applied] == sorted(CHARHUB) and result.error is None
    ledger_rows = rows(database)
    for r, name in zip(ledger_rows, sorted(CHARHUB), strict=True):
        expected = hashlib.sha256((root / name / "migration.sql").read_bytes()).hexdigest()
        assert r["migration_name"] == name and r["checksum"] == expected and UUID4.match(r["id"])
        assert r["applied_steps_count"] == 1 and r["logs"] is None and r["rolled_back_at"] is None
        assert r["started_at"] <= r["finished_at"]
    with psycopg.connect(database) as conn:
        columns = conn.execute("SELECT column_name, data_type, character_maximum_length, is_nullable, "
                               "column_default FROM information_schema.columns WHERE table_name = "
                               "'_prisma_migrations' ORDER BY ordinal_position").fetchall()
        assert conn.execute('SELECT count(*) FROM "Character"').fetchone() == (0,)
        enum = conn.execute("SELECT enum_range(NULL::\"Visibility\")::text").fetchone()
        assert enum == ("{PUBLIC,PRIVATE,UNLISTED}",)
    assert columns == [("id", "character varying", 36, "NO", None),
                       ("checksum", "character varying", 64, "NO", None),
                       ("finished_at", "timestamp with time zone", None, "YES", None),
                       ("migration_name", "character varying", 255, "NO", None),
                       ("logs", "text", None, "YES", None),
                       ("rolled_back_at", "timestamp with time zone", None, "YES", None),
                       ("started_at", "timestamp with time zone", None, "NO", "now()"),
                       ("applied_steps_count", "integer", None, "NO", "0")]
    again = run(database, root)
    assert again.applied == [] and again.plan.pending == [] and rows(database) == ledger_rows


def test_failure_leaves_earlier_applied_row_failed_nothing_half_applied(database, tmp_path):
    broken = 'CREATE TABLE "Half" ("id" TEXT);\nINSERT INTO "Half" VALUES (\'x\');\nSELECT 1/0;\n'
    root = write_migrations(tmp_path / "m", {"1_init": CHARHUB["20250101000000_init"], "2_broken": broken,
                                             "3_later": 'CREATE TABLE "Later" ("id" TEXT);\n'})
    result = run(database, root)
    assert [a.name for a in result.applied] == ["1_init"] and result.failed == "2_broken"
    assert "division by zero" in str(result.error) and "resolve --rolled-back 2_broken" in str(result.error)
    by_name = {r["migration_name"]: r for r in rows(database)}
    assert set(by_name) == {"1_init", "2_broken"}
    failed = by_name["2_broken"]
    assert failed["finished_at"] is None and failed["rolled_back_at"] is None and failed["applied_steps_count"] == 0
    assert "division by zero" in failed["logs"] and "22012" in failed["logs"]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('\"Half\"'), to_regclass('\"Later\"')").fetchone() == (None, None)
    with pytest.raises(ConfigError, match="P3009.*resolve --rolled-back 2_broken"):
        run(database, root)

    (root / "2_broken" / "migration.sql").write_text('CREATE TABLE "Half" ("id" TEXT);\n')
    files, _ = read_migrations(root)
    with psycopg.connect(database, autocommit=True) as conn:
        with pytest.raises(ConfigError, match="P3008"):
            ledger.resolve_applied(conn, files[0])
        assert ledger.resolve_rolled_back(conn, "2_broken") == 1
        with pytest.raises(ConfigError, match="not in a failed state"):
            ledger.resolve_rolled_back(conn, "2_broken")
    result = run(database, root)
    assert [a.name for a in result.applied] == ["2_broken", "3_later"]
    assert [r["migration_name"] for r in rows(database) if r["finished_at"]] == ["1_init", "2_broken", "3_later"]


def test_resolve_applied_marks_a_failed_migration_done(database, tmp_path):
    root = write_migrations(tmp_path / "m", {"1_bad": "SELECT 1/0;\n"})
    assert run(database, root).failed == "1_bad"
    files, _ = read_migrations(root)
    with psycopg.connect(database, autocommit=True) as conn:
        ledger.resolve_applied(conn, files[0])
        plan = current_plan(conn, files)
    assert plan.applied == ["1_bad"] and plan.failed == [] and plan.pending == []
    stamped, done = rows(database)
    assert stamped["rolled_back_at"] is not None and stamped["finished_at"] is None
    assert done["logs"] == "" and done["applied_steps_count"] == 0 and done["checksum"] == files[0].checksum


def test_changed_applied_file_is_drift(database, tmp_path):
    root = write_migrations(tmp_path / "m", {"1_init": CHARHUB["20250101000000_init"]})
    run(database, root)
    (root / "1_init" / "migration.sql").write_text(CHARHUB["20250101000000_init"] + "-- edited\n")
    (root / "2_next").mkdir()
    (root / "2_next" / "migration.sql").write_text('CREATE TABLE "Next" ("id" TEXT);\n')
    with pytest.raises(ConfigError, match=r"drift: .*1_init \(changed\).*--allow-drift"):
        run(database, root)
    crlf = CHARHUB["20250101000000_init"].replace("\n", "\r\n").encode()
    (root / "1_init" / "migration.sql").write_bytes(crlf)  # same text, Windows line endings: not drift
    assert [a.name for a in run(database, root).applied] == ["2_next"]


def test_lock_held_elsewhere_waits_then_fails_cleanly(database, tmp_path):
    root = write_migrations(tmp_path / "m", CHARHUB)
    with psycopg.connect(database, autocommit=True, application_name="prisma-migrate") as other:
        other.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        started = time.monotonic()
        with pytest.raises(DatabaseError, match=r"held by pid \d+ \(prisma-migrate.*Nothing was applied") as info:
            run(database, root, RunnerOptions(lock_wait=1.0, poll=0.1))
        assert time.monotonic() - started >= 1.0 and info.value.transient
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('_prisma_migrations')").fetchone() == (None,)
    assert len(run(database, root).applied) == 3  # the lock was released


def _block_until_waited(database: str, table: str, hold: float, release: threading.Event | None = None
                        ) -> threading.Thread:
    """A transaction holding ACCESS SHARE on ``table``; released ``hold`` s after someone queues behind it
    (or when ``release`` is set)."""
    ready, release = threading.Event(), release or threading.Event()

    def blocker() -> None:
        with psycopg.connect(database) as conn, psycopg.connect(database, autocommit=True) as watch:
            conn.execute(f'SELECT count(*) FROM "{table}"')  # the transaction stays open
            ready.set()
            while not watch.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]:
                time.sleep(0.02)
            release.wait(hold)
            conn.rollback()

    thread = threading.Thread(target=blocker, daemon=True)
    thread.start()
    ready.wait(10)
    return thread


def test_blocked_alter_hits_lock_timeout_retries_then_succeeds(database, tmp_path):
    root = write_migrations(tmp_path / "m", {"1_init": CHARHUB["20250101000000_init"]})
    run(database, root)
    write_migrations(root, {"2_tagline": CHARHUB["20250301000000_character_tagline"]})
    thread = _block_until_waited(database, "Character", hold=1.0)
    result = run(database, root, RunnerOptions(lock_wait=1, lock_timeout=2.0, lock_retries=10, poll=0.1))
    thread.join(10)
    (applied,) = result.applied
    assert applied.name == "2_tagline" and applied.attempts > 1 and applied.lock_timeouts[0] == 0.1
    assert rows(database)[-1]["finished_at"] is not None


def test_lock_timeouts_exhausted_fail_the_migration_cleanly(database, tmp_path):
    root = write_migrations(tmp_path / "m", {"1_init": CHARHUB["20250101000000_init"]})
    run(database, root)
    write_migrations(root, {"2_tagline": CHARHUB["20250301000000_character_tagline"]})
    release = threading.Event()
    thread = _block_until_waited(database, "Character", hold=60, release=release)
    result = run(database, root, RunnerOptions(lock_wait=1, lock_timeout=0.2, lock_retries=3, poll=0.1))
    assert result.failed == "2_tagline" and "after 3 attempts" in str(result.error)
    last = rows(database)[-1]
    assert last["finished_at"] is None and "55P03" in last["logs"]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE column_name = 'tagline'"
                            ).fetchone() == (0,)
    release.set()
    thread.join(10)


def test_create_index_concurrently_runs_outside_a_transaction(database, tmp_path):
    root = write_migrations(tmp_path / "m", {
        "1_init": CHARHUB["20250101000000_init"],
        "2_idx": '-- CreateIndex\nCREATE INDEX CONCURRENTLY "Character_name_idx" ON "Character"("name");\n'})
    result = run(database, root)
    assert [a.name for a in result.applied] == ["1_init", "2_idx"]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = '\"Character_name_idx\"'::regclass"
                            ).fetchone() == (True,)
    write_migrations(root, {"3_mixed": 'CREATE INDEX CONCURRENTLY "a" ON "User"("id");\nSELECT 1;\n'})
    with pytest.raises(ConfigError, match="3_mixed: a migration using CONCURRENTLY must contain only"):
        read_migrations(root)


def test_files_with_their_own_begin_commit_and_percent_signs(database, tmp_path):
    own_tx = "BEGIN;\nCREATE TABLE \"Own\" (\"id\" TEXT);\nINSERT INTO \"Own\" VALUES ('100%');\nCOMMIT;\n"
    broken_tx = "BEGIN;\nCREATE TABLE \"Half\" (\"id\" TEXT);\nSELECT 1/0;\nCOMMIT;\n"
    root = write_migrations(tmp_path / "m", {"1_own": own_tx, "2_broken": broken_tx})
    result = run(database, root)
    assert [a.name for a in result.applied] == ["1_own"] and result.failed == "2_broken"
    assert "division by zero" in rows(database)[-1]["logs"]  # recorded although the file's BEGIN aborted
    with psycopg.connect(database) as conn:
        assert conn.execute('SELECT * FROM "Own"').fetchall() == [("100%",)]
        assert conn.execute("SELECT to_regclass('\"Half\"')").fetchone() == (None,)


def test_non_utf8_file_is_refused_before_anything_runs(tmp_path):
    root = write_migrations(tmp_path / "m", {"1_x": "SELECT 1;\n"})
    (root / "1_x" / "migration.sql").write_bytes(b"SELECT '\xff';\n")
    with pytest.raises(ConfigError, match="1_x: migration.sql is not UTF-8"):
        read_migrations(root)
