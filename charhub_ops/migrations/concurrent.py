"""A ``CREATE INDEX CONCURRENTLY`` migration (the file's only statement), run outside a transaction.

Such a build waits for every transaction older than it — a backup's snapshot, an app transaction — in
phases that take no table lock worth bounding, so a ``lock_timeout`` only turns a wait into a failure that
leaves an INVALID index behind (and a failed migration: P3009 for every later deploy). It therefore runs with
``lock_timeout = 0`` and its own ``statement_timeout`` (``concurrent_timeout``), both session-level and reset
after. If it fails, the INVALID index it left (one that did not exist before) is dropped with ``DROP INDEX
CONCURRENTLY``; if that fails too, the failure names the statement to run. An ``IF NOT EXISTS`` build that
"succeeds" on an INVALID index left earlier fails, naming the statement to run.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from charhub_ops.migrations.sqltext import concurrent_index, split_statements

__all__ = ["run_concurrently"]

INDEX_SQL = """SELECT n.nspname, c.relname, i.indisvalid
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indrelid = to_regclass(%s) AND c.relname = %s"""


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 0)


def _index(conn: psycopg.Connection, target: tuple[str, str]) -> tuple[str, bool] | None:
    """(qualified quoted name, valid) of the index ``target`` = (index, table), or None."""
    index, table = target
    regclass = sql.Identifier(*table.split(".", 1)).as_string(conn)
    row = conn.execute(INDEX_SQL, [regclass, index.rsplit(".", 1)[-1]]).fetchone()
    return None if row is None else (sql.Identifier(row[0], row[1]).as_string(conn), row[2])


def _drop_invalid(conn: psycopg.Connection, target: tuple[str, str]) -> str | None:
    """Drop the INVALID index a failed build left; what was done (or what to run), for the failure message."""
    found = _index(conn, target)
    if found is None or found[1]:
        return None
    drop = f"DROP INDEX CONCURRENTLY IF EXISTS {found[0]};"
    try:
        conn.execute(drop)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"It left the INVALID index {found[0]}, which could not be dropped ({first}): run `{drop}` first."
    return f"The run dropped the INVALID index {found[0]} it left."


def _refuse_invalid(conn: psycopg.Connection, target: tuple[str, str] | None) -> None:
    """``IF NOT EXISTS`` succeeds on an INVALID index an earlier failed build left: that is no index."""
    found = _index(conn, target) if target else None
    if found and not found[1]:
        raise psycopg.errors.ObjectNotInPrerequisiteState(
            f"the index {found[0]} exists but is INVALID (left by an earlier failed build): run `DROP INDEX "
            f"CONCURRENTLY IF EXISTS {found[0]};`, then run the migration again")


def run_concurrently(conn: psycopg.Connection, script: str, statement_timeout: float) -> None:
    """Run ``script`` (one CONCURRENTLY statement) with no lock_timeout and ``statement_timeout`` seconds
    (0 = none). A failure is re-raised with a note (``exc.__notes__``) saying what happened to the INVALID
    index it left (dropped, or the statement to run)."""
    target = next((t for st in split_statements(script) if (t := concurrent_index(st.text))), None)
    existed = target is not None and _index(conn, target) is not None
    conn.execute(f"SET lock_timeout = 0; SET statement_timeout = '{_ms(statement_timeout)}ms'")
    try:
        conn.execute(script)
        _refuse_invalid(conn, target)
    except psycopg.Error as exc:
        note = _drop_invalid(conn, target) if target and not existed and not conn.closed else None
        if note or target is None:  # an index that existed before is not this build's
            exc.add_note(note or "An INVALID index may remain: drop it (DROP INDEX CONCURRENTLY) before retrying.")
        raise
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.execute("RESET lock_timeout; RESET statement_timeout")
