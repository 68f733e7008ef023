"""Deleting expired rows in short batches that a live application does not notice.

Each batch is one short transaction (GitLab's loose-foreign-keys cleaner is the model) with ``SET LOCAL
lock_timeout, statement_timeout``; how a batch finds its rows — along the timestamp index or block by block
through the heap — is :mod:`.sweep`'s, which one a policy gets is :func:`.batches.choose_sweep`'s. A batch first
runs as a plain ``DELETE`` that may wait ``row_wait`` for a row a writer holds; past that it is rolled back and
rerun with ``FOR UPDATE SKIP LOCKED`` (held rows wait for the next run), so the cleaner is never stuck behind a
writer and pays for row locks only when there is one.

Batches grow while they stay fast and shrink when slow; a lock or statement timeout shrinks the batch
(:class:`.batches.BatchSizer`) instead of failing; so does a serialization failure (a table that cascades to
itself runs its batches at REPEATABLE READ: see :func:`_in_batch`). Every DELETE repeats the policy's predicate
(:mod:`.sweep`): a row the app changed after the batch selected it is re-checked and stays. The pause after a
batch is proportional to its duration. The cursor (the newest timestamp deleted, or the next heap block) is kept
in ``charhub_ops.cleanup_cursors`` so the next batch — and the next run, after a budget stop — goes on instead
of rescanning from the start; a run that reaches the end clears it. ``VACUUM (ANALYZE)`` runs afterwards,
outside a transaction. Sessions run with ``TimeZone=UTC`` (Prisma stores UTC in ``timestamp without time zone``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel

from charhub_ops.cleanup.batches import BatchSizer, Budget, choose_sweep, pause_after, stop_reason
from charhub_ops.cleanup.policy import RowPolicy, TablePlan
from charhub_ops.cleanup.sweep import (
    BLOCK_PREFIX,
    blocks_statement,
    conditions,
    heap_blocks,
    index_statement,
    parse_position,
    table_name,
)
from charhub_ops.errors import DatabaseError
from charhub_ops.migrations.ledger import HISTORY_SCHEMA, ensure_ops_ddl
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
# rerun smaller: a lock or statement timeout, or (REPEATABLE READ batches) a cascade that met a row committed since
_TIMEOUTS = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled, psycopg.errors.SerializationFailure)
_GUESS_ROWS_PER_BLOCK = 100.0  # a table never analyzed: sizes in blocks start from this guess


class RowOptions(BaseModel):
    lock_timeout: float = 0.2  # seconds a batch may wait for a lock (after the SKIP LOCKED rerun: the table's)
    row_wait: float = 0.05  # seconds the plain DELETE waits for a row a writer holds before the SKIP LOCKED rerun
    statement_timeout: float = 5.0  # seconds per batch: also the longest a writer can wait for a row
    pause: float = 0.0  # the shortest pause between batches (seconds); the pause is pause_ratio × the batch's time
    pause_ratio: float = 0.1  # pause = this × the batch's duration, at least ``pause``
    floor: int = 100  # smallest batch after timeouts (rows)
    max_batch: int = 50_000  # batches grow up to this (or the policy's batch_size if larger) while fast (rows)
    # grow while a full batch takes under half this, shrink over twice this: a writer waits for a row a batch holds
    # at most about one batch (bench/cleanup_bench.py: 0.03 kept its worst wait near 100 ms, 0.1 let it reach 260)
    target_batch_seconds: float = 0.03
    sweep: Literal["auto", "index", "blocks"] = "auto"  # auto: batches.choose_sweep
    sweep_share: float = 0.1  # auto: the block sweep when the matched rows are at least this share of the table
    # commit batches without waiting for the WAL flush (synchronous_commit off, for the batch only): a crash may
    # lose the last batches' deletes — those rows are deleted again by the next run — never corrupts anything
    async_commit: bool = True


class PolicyResult(BaseModel):
    table: str
    cutoff: datetime
    matched: int
    deleted: int = 0
    batches: int = 0
    seconds: float = 0.0
    slowest_batch: float = 0.0
    lock_waits: int = 0  # batches that timed out (or met a serialization error) and were retried smaller
    skip_locked_batches: int = 0  # batches rerun with SKIP LOCKED because a writer held a row past row_wait
    batch_size: int = 0  # rows per batch at the end (smaller than configured after timeouts; blocks × rows/block)
    sweep: str = ""  # index | blocks
    stopped: str = "dry-run"  # done | max_rows | max_seconds | dry-run
    cursor: str | None = None  # where the next run resumes (None: from the start)


def cursor_key(policy: RowPolicy) -> str:
    return f"{policy.name}.{policy.timestamp_column}|{json.dumps(policy.where, sort_keys=True)}"


def count_matching(conn: psycopg.Connection, plan: TablePlan, cutoff: datetime) -> int:
    """Exactly how many rows the policy would delete now (the dry run's figure; rows its cascades delete in
    other tables, or below a selected row through a self-reference, are not in it)."""
    policy = plan.policy
    where, params = conditions(plan, with_cursor=False)
    with db_errors(f"count {policy.name}"):
        conn.execute("SET TimeZone = 'UTC'")
        return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table_name(policy), where),
                            {**params, "cutoff": cutoff}).fetchone()[0]


def _in_batch(conn: psycopg.Connection, statement: sql.Composed, params: dict, opts: RowOptions,
              lock_timeout: float, repeatable: bool = False) -> tuple[int, tuple | None]:
    """One transaction: (rowcount, the returned row if any). Raises the psycopg timeout errors as they are.
    Pipelined: BEGIN, the SET LOCALs, the statement and COMMIT go in one round trip. ``repeatable`` (a table
    that cascades to itself): REPEATABLE READ, so that a cascade that would delete a row committed after the
    batch's snapshot (a reply to a row being deleted) fails with a serialization error instead — the batch is
    rerun, and then sees the reply (PostgreSQL's cascades check new rows against the transaction's snapshot)."""
    with conn.pipeline(), conn.transaction():
        if repeatable:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true), "
                     "set_config('synchronous_commit', %s, true)",
                     [f"{max(1, int(lock_timeout * 1000))}ms", f"{int(opts.statement_timeout * 1000)}ms",
                      "off" if opts.async_commit else "on"])
        cur = conn.execute(statement, params)
    return cur.rowcount, (cur.fetchone() if cur.description else None)


class _IndexSweep:
    """Batches of ``size`` rows in timestamp order; the cursor is the newest timestamp deleted."""

    kind = "index"

    def __init__(self, plan: TablePlan, cutoff: datetime, position: str | None) -> None:
        self.plan, self.cutoff, self.position, self.finished = plan, cutoff, position, False

    def sizes(self, opts: RowOptions) -> tuple[int, int, int]:
        """(start, floor, ceiling) in rows."""
        batch = self.plan.policy.batch_size
        return batch, min(opts.floor, batch), opts.max_batch

    def rows_per_unit(self) -> float:
        return 1.0

    def run(self, conn: psycopg.Connection, size: int, limit: int | None, opts: RowOptions, skip_locked: bool,
            lock_timeout: float) -> tuple[int, bool]:
        """(rows deleted, whether the batch was full)."""
        size = size if limit is None else min(size, limit)
        statement, params = index_statement(self.plan, self.position is not None, skip_locked)
        params.update(cutoff=self.cutoff, position=self.position, limit=size)
        _, (count, newest) = _in_batch(conn, statement, params, opts, lock_timeout, bool(self.plan.self_references))
        self.position = newest.isoformat() if newest is not None else self.position
        self.finished = count == 0
        return count, count >= size

    def cursor(self) -> str | None:
        return self.position


class _BlockSweep:
    """Batches of ``size`` heap blocks from the cursor to the table's end (its size when the run started)."""

    kind = "blocks"

    def __init__(self, plan: TablePlan, cutoff: datetime, position: int | None, end: int, rows_per_block: float):
        self.plan, self.cutoff, self.lo, self.end = plan, cutoff, position or 0, end
        self.per_block = rows_per_block or _GUESS_ROWS_PER_BLOCK
        self.finished = self.lo >= self.end

    def sizes(self, opts: RowOptions) -> tuple[int, int, int]:
        """(start, floor, ceiling) in blocks: as many blocks as hold that many rows."""
        batch = self.plan.policy.batch_size

        def blocks(rows: int) -> int:
            return max(1, int(rows / self.per_block))
        return blocks(batch), min(blocks(opts.floor), blocks(batch)), blocks(opts.max_batch)

    def rows_per_unit(self) -> float:
        return self.per_block

    def run(self, conn: psycopg.Connection, size: int, limit: int | None, opts: RowOptions, skip_locked: bool,
            lock_timeout: float) -> tuple[int, bool]:
        limited = limit is not None and limit < size * self.per_block
        statement, params = blocks_statement(self.plan, limited, skip_locked)
        params.update(cutoff=self.cutoff, lo=self.lo, hi=self.lo + size, limit=limit)
        rowcount, row = _in_batch(conn, statement, params, opts, lock_timeout, bool(self.plan.self_references))
        if limited and row[0] >= limit:  # the budget ran out inside the range: resume at the last block touched
            count, self.lo = row[0], row[1]
        else:
            count, self.lo = (row[0] if limited else rowcount), self.lo + size
        self.finished = self.lo >= self.end
        return count, not self.finished

    def cursor(self) -> str | None:
        return f"{BLOCK_PREFIX}{self.lo}"


def _sweep(conn: psycopg.Connection, plan: TablePlan, cutoff: datetime, opts: RowOptions, matched: int,
           position: str | None) -> _IndexSweep | _BlockSweep:
    kind = choose_sweep(opts.sweep, partitioned=plan.key != ["ctid"], indexed=plan.index_warning is None,
                        matched=matched, estimated_rows=plan.estimated_rows, share=opts.sweep_share)
    if kind == "index":
        return _IndexSweep(plan, cutoff, parse_position(position, "index"))
    end, per_block = heap_blocks(conn, plan.policy)
    return _BlockSweep(plan, cutoff, parse_position(position, "blocks"), end, per_block)


class _Run:
    """One policy's run: the sweep, the batch size and the tallies, one :meth:`step` per batch."""

    def __init__(self, sweep: _IndexSweep | _BlockSweep, opts: RowOptions, result: PolicyResult,
                 clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.sweep, self.opts, self.result = sweep, opts, result
        policy = sweep.plan.policy
        start, floor, ceiling = sweep.sizes(opts)
        self.sizer = BatchSizer(start, floor=floor, ceiling=ceiling, target_seconds=opts.target_batch_seconds)
        self.budget = Budget(policy.max_rows, policy.max_seconds)
        self.clock, self.sleep, self.start = clock, sleep, clock()
        result.sweep = sweep.kind

    def step(self, conn: psycopg.Connection) -> None:
        """One batch; a lock/statement timeout shrinks the next one (or gives up at the floor, transient)."""
        r = self.result
        limit = None if self.budget.max_rows is None else self.budget.max_rows - r.deleted
        started = self.clock()
        try:
            count, full = self._attempt(conn, self.sizer.size, limit)
        except _TIMEOUTS as exc:
            self._timed_out(exc, self.clock() - started)
            return
        took = self.clock() - started
        r.batches, r.deleted = r.batches + 1, r.deleted + count
        r.slowest_batch = max(r.slowest_batch, took)
        self.sizer.record(took, full=full)
        r.stopped = stop_reason(self.budget, r.deleted, self.clock() - self.start, self.sweep.finished) or "running"
        if r.stopped == "running":
            self.sleep(pause_after(took, self.opts.pause, self.opts.pause_ratio))

    def _attempt(self, conn: psycopg.Connection, size: int, limit: int | None) -> tuple[int, bool]:
        """The plain DELETE, waiting ``row_wait`` at most for a held row; past that, the SKIP LOCKED rerun."""
        try:
            return self.sweep.run(conn, size, limit, self.opts, skip_locked=False,
                                  lock_timeout=min(self.opts.lock_timeout, self.opts.row_wait))
        except psycopg.errors.LockNotAvailable:
            self.result.skip_locked_batches += 1
            return self.sweep.run(conn, size, limit, self.opts, skip_locked=True, lock_timeout=self.opts.lock_timeout)

    def _timed_out(self, exc: Exception, took: float) -> None:
        """Shrink the batch and pause (in proportion to the wait), or give up at the floor (transient)."""
        self.result.lock_waits += 1
        if not self.sizer.shrink():
            rows = int(self.sizer.size * self.sweep.rows_per_unit())
            raise DatabaseError(f"postgres: delete from {self.sweep.plan.policy.name}: still timing out at "
                                f"{rows} rows per batch: {str(exc).strip()}", transient=True) from exc
        self.sleep(pause_after(took, self.opts.pause, self.opts.pause_ratio))

    def finish(self) -> PolicyResult:
        r = self.result
        r.seconds, r.batch_size = self.clock() - self.start, int(self.sizer.size * self.sweep.rows_per_unit())
        r.cursor = None if r.stopped == "done" else self.sweep.cursor()
        return r


def delete_expired(conn: psycopg.Connection, plan: TablePlan, cutoff: datetime, opts: RowOptions,
                   matched: int, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> PolicyResult:
    """Delete the policy's rows older than ``cutoff`` in batches until done or the budget is spent. The cursor
    is saved however the run ends (an error after some batches keeps their progress)."""
    key = cursor_key(plan.policy)
    ensure_cursors(conn)
    result = PolicyResult(table=plan.policy.name, cutoff=cutoff, matched=matched, stopped="running")
    with db_errors(f"delete from {plan.policy.name}"):
        conn.execute("SET TimeZone = 'UTC'")
    run = _Run(_sweep(conn, plan, cutoff, opts, matched, read_cursor(conn, key)), opts, result, clock, sleep)
    try:
        with db_errors(f"delete from {plan.policy.name}"):
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
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table_name(policy)))


# --- the cursor store (schema charhub_ops, beside the migration history) -------------------------------

def _cursors() -> sql.Composed:
    return sql.SQL("{}.cleanup_cursors").format(sql.Identifier(HISTORY_SCHEMA))


def ensure_cursors(conn: psycopg.Connection) -> None:
    ensure_ops_ddl(conn, CURSOR_DDL, "create charhub_ops.cleanup_cursors")


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
