"""Prisma's ledger (``_prisma_migrations``), written exactly as Prisma writes it, our own run history
(schema ``charhub_ops``, out of Prisma's sight), and the migration directory on disk.

Prisma's statements (sql-schema-connector ``flavour/postgres.rs``): the table is created if missing;
a migration's row is inserted when it starts (uuid v4, checksum, name; ``started_at`` default now());
success sets ``applied_steps_count = 1`` and ``finished_at = now()``; failure stores the error in
``logs``. ``resolve --rolled-back`` stamps ``rolled_back_at`` on the failed rows; ``resolve --applied``
does that too and inserts a finished row (``logs = ''``, no steps).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from charhub_ops.errors import ConfigError
from charhub_ops.migrations.plan import LedgerRow, MigrationFile, accepted_checksums, checksum
from charhub_ops.migrations.sqltext import has_concurrently, split_statements
from charhub_ops.pgerrors import db_errors

__all__ = ["PRISMA_TABLE", "HISTORY_SCHEMA", "ensure_ledger", "read_rows",
           "record_started", "record_finished", "record_failed", "resolve_applied", "resolve_rolled_back",
           "ensure_history", "ensure_ops_ddl", "history_started", "history_finished", "read_history", "read_migrations",
           "read_migration_texts"]

PRISMA_TABLE = "_prisma_migrations"
HISTORY_SCHEMA = "charhub_ops"

PRISMA_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)"""

HISTORY_DDL = """CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.migration_runs (
    run_id uuid PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    duration_seconds double precision,
    operator text NOT NULL,
    outcome text NOT NULL DEFAULT 'running',
    backup_id text,
    no_backup boolean NOT NULL DEFAULT false,
    allow_drift boolean NOT NULL DEFAULT false,
    accepted jsonb NOT NULL DEFAULT '[]',
    plan jsonb NOT NULL DEFAULT '{{}}',
    applied jsonb NOT NULL DEFAULT '[]',
    error text
)"""


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(PRISMA_TABLE))


def ensure_ledger(conn: psycopg.Connection, schema: str = "public") -> None:
    """The ledger table in ``schema`` (created first if missing, as Prisma does for ``?schema=``)."""
    with db_errors(f"create {PRISMA_TABLE}"):
        if schema != "public":
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(PRISMA_DDL).format(table=_table(schema)))


def read_rows(conn: psycopg.Connection, schema: str = "public") -> list[LedgerRow]:
    """Every row, oldest first; [] when the table does not exist yet."""
    with db_errors(f"read {PRISMA_TABLE}"):
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                              [_table(schema).as_string(conn)]).fetchone()[0]
        if not exists:
            return []
        rows = conn.execute(sql.SQL(
            "SELECT id, checksum, migration_name, started_at, finished_at, rolled_back_at, logs, "
            "applied_steps_count FROM {} ORDER BY started_at, migration_name").format(_table(schema))).fetchall()
    return [LedgerRow(*row) for row in rows]


def record_started(conn: psycopg.Connection, name: str, file_checksum: str, schema: str = "public") -> str:
    row_id = str(uuid.uuid4())
    with db_errors(f"record the start of {name}"):
        conn.execute(sql.SQL("INSERT INTO {} (id, checksum, migration_name) VALUES (%s, %s, %s)")
                     .format(_table(schema)), [row_id, file_checksum, name])
    return row_id


def record_finished(conn: psycopg.Connection, row_id: str, schema: str = "public") -> None:
    with db_errors("record a finished migration"):
        conn.execute(sql.SQL("UPDATE {} SET applied_steps_count = applied_steps_count + 1, finished_at = now() "
                             "WHERE id = %s").format(_table(schema)), [row_id])


def record_failed(conn: psycopg.Connection, row_id: str, logs: str, schema: str = "public") -> None:
    with db_errors("record a failed migration"):
        conn.execute(sql.SQL("UPDATE {} SET logs = %s WHERE id = %s").format(_table(schema)), [logs, row_id])


def _state(rows: list[LedgerRow], name: str) -> tuple[list[LedgerRow], bool]:
    mine = [r for r in rows if r.migration_name == name]
    return [r for r in mine if r.failed], any(r.applied for r in mine)


def resolve_rolled_back(conn: psycopg.Connection, name: str, schema: str = "public") -> int:
    """Prisma's ``resolve --rolled-back``: stamp the failed rows of ``name``; error unless it is failed (P3012)."""
    failed, applied = _state(read_rows(conn, schema), name)
    if not failed:
        state = "applied" if applied else "not in the ledger"
        raise ConfigError(f"resolve --rolled-back {name}: the migration is not in a failed state ({state}; P3012)")
    _stamp_rolled_back(conn, [r.id for r in failed], schema)
    return len(failed)


def _stamp_rolled_back(conn: psycopg.Connection, ids: list[str], schema: str) -> None:
    with db_errors("mark migrations rolled back"):
        conn.execute(sql.SQL("UPDATE {} SET rolled_back_at = now() WHERE id = ANY(%s)").format(_table(schema)),
                     [ids])


def resolve_applied(conn: psycopg.Connection, file: MigrationFile, schema: str = "public") -> str:
    """Prisma's ``resolve --applied``: failed rows are rolled back, a finished row is inserted (P3008 if applied)."""
    ensure_ledger(conn, schema)
    failed, applied = _state(read_rows(conn, schema), file.name)
    if applied:
        raise ConfigError(f"resolve --applied {file.name}: the migration is already recorded as applied (P3008)")
    row_id = str(uuid.uuid4())
    with db_errors(f"mark {file.name} applied"), conn.transaction():
        if failed:
            _stamp_rolled_back(conn, [r.id for r in failed], schema)
        conn.execute(sql.SQL("INSERT INTO {} (id, checksum, started_at, finished_at, migration_name, "
                             "applied_steps_count, logs) VALUES (%s, %s, now(), now(), %s, 0, '')")
                     .format(_table(schema)), [row_id, file.checksum, file.name])
    return row_id


# --- our own history (schema charhub_ops) -------------------------------------------------------------

def _history() -> sql.Composed:
    return sql.SQL("{}.migration_runs").format(sql.Identifier(HISTORY_SCHEMA))


def ensure_ops_ddl(conn: psycopg.Connection, ddl: str, what: str) -> None:
    """Run ``ddl`` (``CREATE … IF NOT EXISTS`` in the ``charhub_ops`` schema, ``{schema}`` for its name) in one
    transaction holding a transaction-level advisory lock: IF NOT EXISTS does not protect against a concurrent twin
    (a migrate and a cleanup starting together: the loser fails on pg_namespace's or pg_type's unique index)."""
    with db_errors(what), conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('charhub_ops: create schema objects'))")
        conn.execute(sql.SQL(ddl).format(schema=sql.Identifier(HISTORY_SCHEMA)))


def ensure_history(conn: psycopg.Connection) -> None:
    ensure_ops_ddl(conn, HISTORY_DDL, "create the migration history")


def history_started(conn: psycopg.Connection, run_id: str, operator: str, plan: dict, accepted: list[str],
                    no_backup: bool, allow_drift: bool, backup_id: str | None) -> None:
    ensure_history(conn)
    with db_errors("record the run"):
        conn.execute(sql.SQL("INSERT INTO {} (run_id, operator, plan, accepted, no_backup, allow_drift, backup_id) "
                             "VALUES (%s, %s, %s, %s, %s, %s, %s)").format(_history()),
                     [run_id, operator, json.dumps(plan), json.dumps(accepted), no_backup, allow_drift, backup_id])


def history_finished(conn: psycopg.Connection, run_id: str, outcome: str, applied: list[str],
                     error: str | None) -> None:
    with db_errors("record the run's outcome"):
        conn.execute(sql.SQL("UPDATE {} SET finished_at = now(), outcome = %s, applied = %s, error = %s, "
                             "duration_seconds = extract(epoch FROM now() - started_at) WHERE run_id = %s")
                     .format(_history()), [outcome, json.dumps(applied), error, run_id])


def read_history(conn: psycopg.Connection) -> list[dict]:
    with db_errors("read the migration history"):
        if not conn.execute("SELECT to_regclass('charhub_ops.migration_runs') IS NOT NULL").fetchone()[0]:
            return []
        cur = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY started_at").format(_history()))
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# --- the directory -----------------------------------------------------------------------------------

def read_migrations(directory: str | Path) -> tuple[list[MigrationFile], dict[str, Path]]:
    """``<dir>/<name>/migration.sql`` in name order: the files (checksums) and their paths.

    A file that uses CONCURRENTLY must hold that single statement (it cannot run in a transaction)."""
    files, _, paths = _read(directory)
    return files, paths


def read_migration_texts(directory: str | Path) -> tuple[list[MigrationFile], dict[str, str]]:
    """Like :func:`read_migrations`, with each file's text — the very bytes its checksum was computed from."""
    files, texts, _ = _read(directory)
    return files, texts


def _read(directory: str | Path) -> tuple[list[MigrationFile], dict[str, str], dict[str, Path]]:
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"--migrations: {root} is not a directory")
    files, texts, paths = [], {}, {}
    for path in sorted(root.glob("*/migration.sql")):
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path.parent.name}: migration.sql is not UTF-8 ({exc.reason} at byte {exc.start})"
                              ) from None
        concurrent = has_concurrently(text)
        if concurrent and len(split_statements(text)) != 1:
            raise ConfigError(f"{path.parent.name}: a migration using CONCURRENTLY must contain only that one "
                              f"statement (it runs outside a transaction)")
        files.append(MigrationFile(path.parent.name, checksum(data), accepted_checksums(data), concurrent))
        texts[path.parent.name], paths[path.parent.name] = text, path
    return files, texts, paths
