"""Issue 16, items 15, 16, 18, 19 against real PostgreSQL: timeouts that hold for a whole file with its own
BEGIN/COMMIT, CONCURRENTLY files that wait for old snapshots and never leave an INVALID index behind, the
apply step running exactly the planned files, and Prisma's ``?schema=``."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from charhub_ops.errors import ConfigError
from charhub_ops.migrations import runner
from charhub_ops.migrations.ledger import read_migrations
from charhub_ops.migrations.runner import RunnerOptions, migrate_locked
from charhub_ops.pgurl import parse_pg_url
from tests.harness.migrations import CHARHUB, write_migrations

INIT = {"1_init": CHARHUB["20250101000000_init"]}
# Prisma's shape for an enum change: its own transaction, then more statements after the COMMIT
ENUM_THEN_ALTER = """-- AlterEnum
BEGIN;
CREATE TYPE "Role" AS ENUM ('USER', 'ADMIN');
COMMIT;

-- AlterTable
ALTER TABLE "Character" ADD COLUMN "role" "Role";
"""


def run(url: str, root, opts: RunnerOptions):
    files, paths = read_migrations(root)
    return migrate_locked(parse_pg_url(url), files, paths, opts)


def _hold(database: str, statement: str, release: threading.Event, hold: float) -> threading.Thread:
    """A session running ``statement`` in an open transaction (an app transaction, a backup's snapshot); it ends
    ``hold`` s after another session starts waiting behind it, or when ``release`` is set."""
    ready = threading.Event()

    def holder() -> None:
        with psycopg.connect(database) as conn, psycopg.connect(database, autocommit=True) as watch:
            conn.execute(statement)
            ready.set()
            while not release.is_set() and not watch.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]:
                time.sleep(0.02)
            release.wait(hold)
            conn.rollback()

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert ready.wait(10)
    return thread


def _exists(database: str, query: str) -> bool:
    with psycopg.connect(database) as conn:
        return conn.execute(query).fetchone()[0]


def test_statement_after_an_inner_commit_times_out_and_the_failure_says_what_was_committed(database, tmp_path):
    root = write_migrations(tmp_path / "m", INIT)
    run(database, root, RunnerOptions(lock_wait=1, poll=0.1))
    write_migrations(root, {"2_enum": ENUM_THEN_ALTER})
    release = threading.Event()
    app = _hold(database, 'SELECT count(*) FROM "Character"', release, hold=30)
    started = time.monotonic()
    result = run(database, root, RunnerOptions(lock_wait=1, lock_timeout=0.3, lock_retries=2, poll=0.1))
    waited = time.monotonic() - started
    release.set()
    app.join(10)
    print(f"the migration returned after {waited:.1f} s")  # before the fix: it queued until the app let go
    assert result.failed == "2_enum", f"the ALTER after the inner COMMIT queued {waited:.1f} s and then ran"
    message = str(result.error)
    assert "committed up to line 4" in message and "the rest was rolled back" in message
    assert "55P03" in message or "lock timeout" in message
    assert _exists(database, "SELECT to_regtype('\"Role\"') IS NOT NULL")  # committed by the file's own COMMIT
    assert not _exists(database, "SELECT count(*) > 0 FROM information_schema.columns WHERE column_name = 'role'")


def test_lock_retries_after_an_inner_commit_retry_only_the_rest(database, tmp_path):
    root = write_migrations(tmp_path / "m", INIT)
    run(database, root, RunnerOptions(lock_wait=1, poll=0.1))
    write_migrations(root, {"2_enum": ENUM_THEN_ALTER})
    app = _hold(database, 'SELECT count(*) FROM "Character"', threading.Event(), hold=1.0)
    result = run(database, root, RunnerOptions(lock_wait=1, lock_timeout=3.0, lock_retries=10, poll=0.1))
    app.join(10)
    assert result.error is None, result.error
    (applied,) = result.applied
    assert applied.attempts > 1  # the ALTER hit lock timeouts and was retried; the committed CREATE TYPE was not
    assert _exists(database, "SELECT count(*) = 1 FROM information_schema.columns WHERE column_name = 'role'")


CONCURRENT = '-- CreateIndex\nCREATE INDEX CONCURRENTLY "Character_name_idx" ON "Character"("name");\n'


def test_concurrently_waits_for_an_older_snapshot_instead_of_timing_out(database, tmp_path):
    root = write_migrations(tmp_path / "m", INIT)
    run(database, root, RunnerOptions(lock_wait=1, poll=0.1))
    write_migrations(root, {"2_idx": CONCURRENT})
    # a backup's snapshot: REPEATABLE READ, idle in transaction, on another table; held past the lock timeout
    backup = _hold(database, "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM \"User\"",
                   threading.Event(), hold=2.0)
    result = run(database, root, RunnerOptions(lock_wait=1, lock_timeout=0.5, lock_retries=3, poll=0.1))
    backup.join(10)
    assert result.error is None, result.error
    assert _exists(database, "SELECT indisvalid FROM pg_index WHERE indexrelid = '\"Character_name_idx\"'::regclass")


def test_failed_concurrently_drops_the_invalid_index_it_left(database, tmp_path):
    root = write_migrations(tmp_path / "m", INIT)
    run(database, root, RunnerOptions(lock_wait=1, poll=0.1))
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO \"User\" VALUES ('u', 'u@x')")
        conn.execute("INSERT INTO \"Character\" (id, name, \"userId\") VALUES ('a', 'same', 'u'), ('b', 'same', 'u')")
    write_migrations(root, {"2_unique": 'CREATE UNIQUE INDEX CONCURRENTLY "Character_name_key" '
                                        'ON "Character"("name");\n'})
    result = run(database, root, RunnerOptions(lock_wait=1, poll=0.1))
    assert result.failed == "2_unique" and "23505" in str(result.error)
    assert not _exists(database, "SELECT to_regclass('\"Character_name_key\"') IS NOT NULL"), \
        "an INVALID index was left behind"
    assert 'dropped the INVALID index "public"."Character_name_key"' in str(result.error)


def test_apply_runs_exactly_the_planned_files(database, tmp_path):
    root = write_migrations(tmp_path / "m", INIT)
    files, _ = read_migrations(root)
    planned = {f.name: f.checksum for f in files}
    (root / "1_init" / "migration.sql").write_text(CHARHUB["20250101000000_init"] + 'DROP TABLE "User" CASCADE;\n')
    write_migrations(root, {"2_late": 'CREATE TABLE "Late" ("id" TEXT);\n'})
    with pytest.raises(ConfigError, match=r"changed after the plan.*1_init \(changed\).*2_late \(new\).*"
                                          r"Nothing was applied"):
        runner.migrate_plan(parse_pg_url(database), root, planned, RunnerOptions(lock_wait=1, poll=0.1))
    assert not _exists(database, "SELECT to_regclass('_prisma_migrations') IS NOT NULL")


def test_prisma_schema_parameter_is_honoured(database, tmp_path):
    root = write_migrations(tmp_path / "m", INIT)
    url = database + ("&" if "?" in database else "?") + "schema=tenant"
    result = run(url, root, RunnerOptions(lock_wait=1, poll=0.1))
    assert result.error is None and [a.name for a in result.applied] == ["1_init"]
    with psycopg.connect(database) as conn:
        where = dict(conn.execute("SELECT relname, relnamespace::regnamespace::text FROM pg_class "
                                  "WHERE relname IN ('_prisma_migrations', 'User', 'Character')").fetchall())
    assert where == {"_prisma_migrations": "tenant", "User": "tenant", "Character": "tenant"}
    again = run(url, root, RunnerOptions(lock_wait=1, poll=0.1))  # the ledger is read from the same schema
    assert again.applied == [] and again.plan.applied == ["1_init"]


def test_session_timeouts_are_reset_after_the_file_on_success_and_failure(database):
    from charhub_ops.errors import DatabaseError
    from charhub_ops.migrations import ledger
    from charhub_ops.migrations.plan import MigrationFile
    from charhub_ops.migrations.runner import apply_one

    opts = RunnerOptions(lock_timeout=0.7, lock_retries=1, statement_timeout=12.0)
    with psycopg.connect(database, autocommit=True) as conn:
        ledger.ensure_ledger(conn)
        inside = ("BEGIN;\nCREATE TABLE t (x int);\nCOMMIT;\nSELECT set_config('my.seen', "
                  "current_setting('lock_timeout') || '/' || current_setting('statement_timeout'), false);\n")
        apply_one(conn, MigrationFile("1_ok", "c1"), inside, opts)
        shown = conn.execute("SELECT current_setting('my.seen'), current_setting('lock_timeout'), "
                             "current_setting('statement_timeout')").fetchone()
        assert shown == ("700ms/12s", "0", "0")  # in force after the file's COMMIT, reset after the file
        with pytest.raises(DatabaseError, match="committed up to line 3"):
            apply_one(conn, MigrationFile("2_bad", "c2"), "BEGIN;\nCREATE TABLE u (x int);\nCOMMIT;\nSELECT 1/0;\n",
                      opts)
        assert conn.execute("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
                            ).fetchone() == ("0", "0")


def test_a_file_that_never_commits_its_own_begin_fails_instead_of_counting_as_applied(database, tmp_path):
    root = write_migrations(tmp_path / "m", {"1_open": 'BEGIN;\nCREATE TABLE "Open" ("id" TEXT);\n'})
    result = run(database, root, RunnerOptions(lock_wait=1, poll=0.1))
    assert result.failed == "1_open" and "BEGIN without COMMIT" in str(result.error)
    assert not _exists(database, "SELECT to_regclass('\"Open\"') IS NOT NULL")
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT finished_at IS NULL, logs LIKE '%%BEGIN without COMMIT%%' "
                            "FROM _prisma_migrations").fetchone() == (True, True)


def test_if_not_exists_on_an_invalid_leftover_index_fails_naming_the_drop(database, tmp_path):
    root = write_migrations(tmp_path / "m", INIT)
    run(database, root, RunnerOptions(lock_wait=1, poll=0.1))
    with psycopg.connect(database, autocommit=True) as conn:  # a build that failed before this run
        conn.execute("INSERT INTO \"User\" VALUES ('u', 'u@x')")
        conn.execute("INSERT INTO \"Character\" (id, name, \"userId\") VALUES ('a', 'same', 'u'), ('b', 'same', 'u')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute('CREATE UNIQUE INDEX CONCURRENTLY "Character_name_key" ON "Character"("name")')
        conn.execute("DELETE FROM \"Character\" WHERE id = 'b'")
    write_migrations(root, {"2_unique": 'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "Character_name_key" '
                                        'ON "Character"("name");\n'})
    result = run(database, root, RunnerOptions(lock_wait=1, poll=0.1))
    assert result.failed == "2_unique"
    assert 'DROP INDEX CONCURRENTLY IF EXISTS "public"."Character_name_key";' in str(result.error)
