"""Database faults: which failures are transient (pure classifier, real PostgreSQL errors), and the drill
"the database terminates pg_dump's backend mid-dump": a failed run leaves nothing listed, a retried
one exactly one intact backup, and the next run is fine."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from charhub_ops import progress
from charhub_ops.backup.catalog import list_backups
from charhub_ops.backup.manifest import backup_prefix
from charhub_ops.errors import DatabaseError
from charhub_ops.pgerrors import sqlstate_is_transient, stderr_is_transient, tool_failure
from charhub_ops.pgurl import parse_pg_url
from charhub_ops.postgres import LocalTools, PsycopgSession
from charhub_ops.storage import LocalStorage
from tests.harness.restore import fetch_dump, pg_restore
from tests.harness.schema import table_hashes


@pytest.mark.parametrize(("sqlstate", "transient"), [
    ("40001", True), ("40P01", True), ("55P03", True), ("57P01", True), ("57P02", True), ("57P03", True),
    ("08000", True), ("08006", True), ("08001", True), ("53300", True),
    ("28P01", False), ("3D000", False), ("42601", False), ("42501", False), ("57014", False), ("23505", False),
    ("00000", False), ("", False), (None, False),
])
def test_sqlstate_classifier(sqlstate, transient):
    assert sqlstate_is_transient(sqlstate) is transient


@pytest.mark.parametrize(("stderr", "transient"), [
    ('pg_dump: error: Dumping the contents of table "t" failed: PQgetResult() failed.\n'
     "pg_dump: detail: Error message from server: FATAL:  terminating connection due to administrator command",
     True),
    ("pg_dump: error: query failed: server closed the connection unexpectedly\n\tThis probably means the "
     "server terminated abnormally", True),
    ('pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
     "\tIs the server running on that host and accepting TCP/IP connections?", True),
    ("psql: error: could not connect to server: No such file or directory", True),
    ("psql: error: connection to server on socket \"/run/pg/.s.PGSQL.5432\" failed: FATAL:  the database system "
     "is starting up", True),
    ("psql:<stdin>:3: FATAL:  terminating connection due to administrator command\n"
     "psql:<stdin>:3: error: connection to server was lost", True),
    ("pg_restore: error: could not execute query: ERROR:  deadlock detected", True),
    ('pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication '
     'failed for user "charhub"', False),
    ('pg_dump: error: connection to server on socket "/tmp/.s.PGSQL.5432" failed: FATAL:  database "nope" does '
     "not exist", False),
    ('pg_restore: error: could not execute query: ERROR:  relation "x" already exists', False),
    ("pg_dump: error: query failed: ERROR:  permission denied for table secrets", False),
    ("pg_dump: error: aborting because of server version mismatch", False),
    ("", False),
], ids=lambda v: str(v)[:48])
def test_client_tool_stderr_classifier(stderr, transient):
    assert stderr_is_transient(stderr) is transient
    assert tool_failure("pg_dump", 1, stderr.encode()).transient is transient


def test_connection_refused_is_transient_and_authentication_permanent(pg):
    with pytest.raises(DatabaseError, match="Connection refused") as refused:
        PsycopgSession(parse_pg_url("postgresql://postgres:Kx8vQ71m@127.0.0.1:1/db"), connect_timeout=5)
    assert refused.value.transient and "Kx8vQ71m" not in str(refused.value)
    with pytest.raises(DatabaseError, match="does not exist") as missing:
        PsycopgSession(parse_pg_url(pg.url("no_such_db_" + uuid.uuid4().hex[:6])))
    assert not missing.value.transient


def test_query_failures_are_classified_by_sqlstate(database):
    url = parse_pg_url(database)
    with PsycopgSession(url) as admin, PsycopgSession(url) as other:
        admin.query("CREATE TABLE locked (x int)")
        admin.query("BEGIN")
        admin.query("LOCK TABLE locked")
        other.query("SET lock_timeout = '50ms'")
        with pytest.raises(DatabaseError, match="lock timeout") as lock:
            other.query("SELECT * FROM locked")
        assert lock.value.transient  # 55P03
        admin.query("ROLLBACK")
        with pytest.raises(DatabaseError) as syntax:
            other.query("SELEC 1")
        assert not syntax.value.transient  # 42601
        with pytest.raises(DatabaseError) as terminated:
            other.query("SELECT pg_terminate_backend(pg_backend_pid())")
        assert terminated.value.transient  # 57P01


def test_psql_killed_backend_is_transient(database):
    tools = LocalTools(parse_pg_url(database))
    with pytest.raises(DatabaseError, match="exit 2") as info:
        tools.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", "SELECT pg_terminate_backend(pg_backend_pid())"])
    assert info.value.transient


# --- the drill: pg_dump's backend terminated mid-dump ------------------------------------------------------


@pytest.fixture
def big_db(pg, database, monkeypatch) -> str:
    """~40 MB of table data: far more than every buffer between pg_dump and the repository."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY, a text, b text, c text)")
        conn.execute("INSERT INTO events SELECT g, md5(g::text), md5((g + 1)::text), md5((g + 2)::text) "
                     "FROM generate_series(1, 400000) g")
        conn.execute("CREATE TABLE small (id int PRIMARY KEY)")
        conn.execute("INSERT INTO small SELECT generate_series(1, 10)")
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", database)
    return database


class TerminateFirstDump:
    """A progress listener: at the first stored chunk of the dump (pg_dump is mid-dump: most of the data is
    still on the server), terminate pg_dump's backend with pg_terminate_backend, once. A local repository
    calls it in the thread that reads pg_dump's output, so pg_dump cannot run ahead meanwhile (S3 calls it
    from upload threads while reading on: no such guarantee, hence a file repository here)."""

    def __init__(self, pg, dbname: str) -> None:
        self.pg, self.dbname, self.terminated = pg, dbname, 0
        self.lock = threading.Lock()

    def __call__(self, name: str, advanced: int, total: int | None) -> None:
        with self.lock:
            if name != self.dbname or self.terminated:
                return
            with self.pg.connect() as conn:
                sql = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE application_name = 'charhub-ops:pg_dump' AND datname = %s")
                self.terminated = len(conn.execute(sql, [self.dbname]).fetchall())
            assert self.terminated == 1


def _run_backup(repo: str, listener):
    from flows.backup import backup_flow

    progress.subscribe(listener)
    try:
        return backup_flow(repository=repo)
    finally:
        progress.unsubscribe(listener)


def _assert_intact(pg, storage, source_url, tmp_path) -> None:
    (manifest,) = list_backups(storage)
    assert {o.key for o in storage.list()} <= {manifest.dump.key, manifest.globals.key,
                                               backup_prefix(manifest.database, manifest.backup_id) + "manifest.json"}
    assert list(storage.list_partial()) == []  # the failed attempt left no temporary file behind
    dump = fetch_dump(storage, manifest, tmp_path / f"{manifest.backup_id}.pgc")
    target = pg.create_database("drill_" + uuid.uuid4().hex[:8])
    pg_restore(pg.bin, target, dump)
    restored = {k: v[0] for k, v in table_hashes(target).items() if k.startswith("public.")}
    assert restored == {"public.events": 400000, "public.small": 10}
    assert {f"{t.schema_name}.{t.name}": t.rows for t in manifest.tables} == restored


def test_terminated_dump_without_retries_fails_cleanly_then_the_next_run_is_fine(prefect_server, pg, big_db,
                                                                                  tmp_path):
    dbname = big_db.rsplit("/", 1)[1]
    killer = TerminateFirstDump(pg, dbname)
    with pytest.raises(DatabaseError, match=r"^pg_dump: exit 1: .*events") as info:
        _run_backup(f"file://{tmp_path}/repo", killer)
    assert killer.terminated == 1 and info.value.transient
    storage = LocalStorage(tmp_path / "repo")
    assert list_backups(storage) == [] and list(storage.list()) == [] and list(storage.list_partial()) == []
    _run_backup(f"file://{tmp_path}/repo", lambda *a: None)
    _assert_intact(pg, storage, big_db, tmp_path)


def test_terminated_dump_is_retried_to_exactly_one_intact_backup(prefect_server, pg, big_db, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRIES", "1")
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRY_DELAY", "0.1")
    storage = LocalStorage(tmp_path / "repo")
    killer = TerminateFirstDump(pg, big_db.rsplit("/", 1)[1])
    (summary,) = _run_backup(f"file://{tmp_path}/repo", killer)
    assert killer.terminated == 1
    _assert_intact(pg, storage, big_db, tmp_path)
    assert list_backups(storage)[0].backup_id == summary["backup_id"]
