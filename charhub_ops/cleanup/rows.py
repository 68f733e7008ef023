"""Deleting expired rows in short batches that a live application does not notice.

Each batch is one transaction (GitLab's loose-foreign-keys cleaner is the model)::

    SET LOCAL lock_timeout, statement_timeout
    WITH batch AS (SELECT <pk> FROM <table> WHERE <ts> < cutoff AND <ts> >= cursor AND <where>
                   ORDER BY <ts> LIMIT n FOR UPDATE SKIP LOCKED)
    DELETE FROM <table> WHERE <pk> IN (SELECT <pk> FROM batch)

``SKIP LOCKED``: the cleaner never waits for a row a writer holds (that row waits for the next run); a
writer waits for a row the cleaner holds at most one batch (bounded by the batch's ``statement_timeout``).
Batches grow while they stay fast and shrink when slow; a lock or statement timeout shrinks the batch
(:class:`.batches.BatchSizer`) instead of failing. The pause after a batch is proportional to its duration. The
cursor (the newest timestamp deleted) is kept in ``charhub_ops.cleanup_cursors`` so the next batch — and
the next run, after a budget stop — walks the index onward instead of rescanning dead entries from the
start; a run that reaches the end clears it. ``VACUUM (ANALYZE)`` runs afterwards, outside a transaction.
Sessions run with ``TimeZone=UTC`` (Prisma stores UTC in ``timestamp without time zone``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from datetime import datetime

import psycopg
from psycopg import sql
from pydantic import BaseModel

from charhub_ops.cleanup.batches import BatchSizer, Budget, pause_after, stop_reason
from charhub_ops.cleanup.policy import RowPolicy, TablePlan, is_not_null
from charhub_ops.errors import DatabaseError
from charhub_ops.migrations.ledger import HISTORY_SCHEMA
from charhub_ops.pgerrors import db_errors

__all__ = ["RowOptions", "PolicyResult", "cursor_key", "count_matching", "delete_expired", "vacuum_analyze",
           "read_cursor", "save_cursor", "ensure_cursors"]

CURSOR_DDL = """CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.cleanup_cursors (
    policy text PRIMARY KEY,
    position text,
    stopped text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)"""
_TIMEOUTS = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)


class RowOptions(BaseModel):
    lock_timeout: float = 0.2  # seconds the DELETE may wait for a lock (row locks are skipped, not awaited)
    statement_timeout: float = 5.0  # seconds per batch: also the longest a writer can wait for a row
    pause: float = 0.01  # the shortest pause between batches (seconds)
    pause_ratio: float = 0.25  # pause = this × the batch's duration, at least ``pause``
    floor: int = 100  # smallest batch after timeouts
    max_batch: int = 50_000  # batches grow up to this (or the policy's batch_size if larger) while fast
    target_batch_seconds: float = 0.1  # grow while a full batch takes under half this, shrink over twice this


class PolicyResult(BaseModel):
    table: str
    cutoff: datetime
    matched: int
    deleted: int = 0
    batches: int = 0
    seconds: float = 0.0
    slowest_batch: float = 0.0
    lock_waits: int = 0  # batches that hit lock_timeout / statement_timeout and were retried smaller
    batch_size: int = 0  # the size at the end (smaller than configured after timeouts)
    stopped: str = "dry-run"  # done | max_rows | max_seconds | dry-run
    cursor: str | None = None  # where the next run resumes (None: from the start)


def cursor_key(policy: RowPolicy) -> str:
    return f"{policy.name}.{policy.timestamp_column}|{json.dumps(policy.where, sort_keys=True)}"


def _conditions(policy: RowPolicy, with_cursor: bool) -> tuple[sql.Composable, dict]:
    ts = sql.Identifier(policy.timestamp_column)
    parts = [sql.SQL("{} < %(cutoff)s").format(ts)]
    params: dict = {}
    if with_cursor:
        parts.append(sql.SQL("{} >= %(position)s").format(ts))
    for i, (column, value) in enumerate(sorted(policy.where.items())):
        col = sql.Identifier(column)
        if value is None:
            parts.append(sql.SQL("{} IS NULL").format(col))
        elif is_not_null(value):
            parts.append(sql.SQL("{} IS NOT NULL").format(col))
        else:
            values = value if isinstance(value, list) else [value]
            name = f"w{i}"
            params[name] = [str(v) for v in values] if isinstance(values[0], str) else values
            template = "{}::text = ANY(%({})s::text[])" if isinstance(values[0], str) else "{} = ANY(%({})s)"
            parts.append(sql.SQL(template).format(col, sql.SQL(name)))
    return sql.SQL(" AND ").join(parts), params


def _table(policy: RowPolicy) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(policy.schema_name), sql.Identifier(policy.table))


def count_matching(conn: psycopg.Connection, policy: RowPolicy, cutoff: datetime) -> int:
    """Exactly how many rows the policy would delete now (the dry run's figure)."""
    where, params = _conditions(policy, with_cursor=False)
    with db_errors(f"count {policy.name}"):
        conn.execute("SET TimeZone = 'UTC'")
        return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(_table(policy), where),
                            {**params, "cutoff": cutoff}).fetchone()[0]


def _batch_statement(plan: TablePlan, with_cursor: bool) -> tuple[sql.Composed, dict]:
    policy = plan.policy
    where, params = _conditions(policy, with_cursor)
    if plan.key == ["ctid"]:  # a TID scan: no index probe per row; the rows are locked, so ctids cannot move
        key, match = sql.SQL("ctid"), sql.SQL("ctid = ANY(ARRAY(SELECT ctid FROM batch))")
    else:  # partitioned: ctid is not unique across partitions, the primary key is
        key = sql.SQL(", ").join(sql.Identifier(k) for k in plan.key)
        match = sql.SQL("({key}) IN (SELECT {key} FROM batch)").format(key=key)
    statement = sql.SQL(
        "WITH batch AS (SELECT {key} FROM {table} WHERE {where} ORDER BY {ts} LIMIT %(limit)s "
        "FOR UPDATE SKIP LOCKED), gone AS (DELETE FROM {table} WHERE {match} "
        "RETURNING {ts} AS ts) SELECT count(*), max(ts) FROM gone").format(
        key=key, match=match, table=_table(policy), where=where, ts=sql.Identifier(policy.timestamp_column))
    return statement, params


def _one_batch(conn: psycopg.Connection, statement: sql.Composed, params: dict, opts: RowOptions) -> tuple[int, object]:
    """One transaction: (rows deleted, newest timestamp deleted). Raises the psycopg timeout errors as they are."""
    with conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                     [f"{int(opts.lock_timeout * 1000)}ms", f"{int(opts.statement_timeout * 1000)}ms"])
        count, newest = conn.execute(statement, params).fetchone()
    return count, newest


class _Run:
    """One policy's run: the batch size, the cursor and the tallies, one :meth:`step` per batch."""

    def __init__(self, plan: TablePlan, cutoff: datetime, opts: RowOptions, position: str | None,
                 result: PolicyResult, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.plan, self.cutoff, self.opts, self.position, self.result = plan, cutoff, opts, position, result
        self.sizer = BatchSizer(plan.policy.batch_size, floor=min(opts.floor, plan.policy.batch_size),
                                ceiling=opts.max_batch, target_seconds=opts.target_batch_seconds)
        self.budget = Budget(plan.policy.max_rows, plan.policy.max_seconds)
        self.clock, self.sleep, self.start = clock, sleep, clock()

    def step(self, conn: psycopg.Connection) -> None:
        """One batch; a lock/statement timeout shrinks the next one (or gives up at the floor, transient)."""
        statement, params = _batch_statement(self.plan, with_cursor=self.position is not None)
        limit = self.sizer.next_size(self.result.deleted, self.budget.max_rows)
        params.update(cutoff=self.cutoff, position=self.position, limit=limit)
        started = self.clock()
        try:
            count, newest = _one_batch(conn, statement, params, self.opts)
        except _TIMEOUTS as exc:
            self._timed_out(exc, self.clock() - started)
            return
        r, took = self.result, self.clock() - started
        r.batches, r.deleted = r.batches + 1, r.deleted + count
        r.slowest_batch = max(r.slowest_batch, took)
        self.sizer.record(took, full=count >= limit)
        self.position = newest.isoformat() if newest is not None else self.position
        r.stopped = stop_reason(self.budget, r.deleted, self.clock() - self.start, count) or "running"
        if r.stopped == "running":
            self.sleep(pause_after(took, self.opts.pause, self.opts.pause_ratio))

    def _timed_out(self, exc: Exception, took: float) -> None:
        """Shrink the batch and pause (in proportion to the wait), or give up at the floor (transient)."""
        self.result.lock_waits += 1
        if not self.sizer.shrink():
            raise DatabaseError(f"postgres: delete from {self.plan.policy.name}: still timing out at "
                                f"{self.sizer.size} rows per batch: {str(exc).strip()}", transient=True) from exc
        self.sleep(pause_after(took, self.opts.pause, self.opts.pause_ratio))

    def finish(self) -> PolicyResult:
        r = self.result
        r.seconds, r.batch_size = self.clock() - self.start, self.sizer.size
        r.cursor = None if r.stopped == "done" else self.position
        return r


def delete_expired(conn: psycopg.Connection, plan: TablePlan, cutoff: datetime, opts: RowOptions,
                   matched: int, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> PolicyResult:
    """Delete the policy's rows older than ``cutoff`` in batches until done or the budget is spent. The cursor
    is saved however the run ends (an error after some batches keeps their progress)."""
    key = cursor_key(plan.policy)
    ensure_cursors(conn)
    result = PolicyResult(table=plan.policy.name, cutoff=cutoff, matched=matched, stopped="running")
    run = _Run(plan, cutoff, opts, read_cursor(conn, key), result, clock, sleep)
    try:
        with db_errors(f"delete from {plan.policy.name}"):
            conn.execute("SET TimeZone = 'UTC'")
            while result.stopped == "running":
                run.step(conn)
    except BaseException:
        run.finish()
        with contextlib.suppress(DatabaseError):  # the original error matters more
            save_cursor(conn, key, result.cursor, "failed")
        raise
    run.finish()
    save_cursor(conn, key, result.cursor, result.stopped)
    return result


def vacuum_analyze(conn: psycopg.Connection, policy: RowPolicy) -> None:
    """``VACUUM (ANALYZE)`` the table (autocommit connection: VACUUM cannot run in a transaction)."""
    with db_errors(f"vacuum {policy.name}"):
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(_table(policy)))


# --- the cursor store (schema charhub_ops, beside the migration history) -------------------------------

def _cursors() -> sql.Composed:
    return sql.SQL("{}.cleanup_cursors").format(sql.Identifier(HISTORY_SCHEMA))


def ensure_cursors(conn: psycopg.Connection) -> None:
    with db_errors("create charhub_ops.cleanup_cursors"):
        conn.execute(sql.SQL(CURSOR_DDL).format(schema=sql.Identifier(HISTORY_SCHEMA)))


def read_cursor(conn: psycopg.Connection, key: str) -> str | None:
    """Where the policy's last run stopped (None: from the start, or never run); reads only, never creates."""
    with db_errors("read the cleanup cursor"):
        if not conn.execute("SELECT to_regclass('charhub_ops.cleanup_cursors') IS NOT NULL").fetchone()[0]:
            return None
        row = conn.execute(sql.SQL("SELECT position FROM {} WHERE policy = %s").format(_cursors()), [key]).fetchone()
    return row[0] if row else None


def save_cursor(conn: psycopg.Connection, key: str, position: str | None, stopped: str) -> None:
    with db_errors("save the cleanup cursor"):
        conn.execute(sql.SQL("INSERT INTO {} (policy, position, stopped) VALUES (%s, %s, %s) ON CONFLICT (policy) "
                             "DO UPDATE SET position = excluded.position, stopped = excluded.stopped, "
                             "updated_at = now()").format(_cursors()), [key, position, stopped])
