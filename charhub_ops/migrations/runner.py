"""Apply pending migrations natively, the way ``prisma migrate deploy`` does, with lock discipline.

* **Lock**: ``pg_try_advisory_lock(72707369)`` — Prisma's key — polled on a dedicated session until
  ``lock_wait`` runs out; never a blocking ``pg_advisory_lock``. The app's own ``migrate deploy`` and
  this run exclude each other.
* **Each migration** is one simple-protocol query (one implicit transaction, as in Prisma), preceded by
  ``SET LOCAL lock_timeout`` / ``SET LOCAL statement_timeout``. Its ledger row is written before and
  after, outside that transaction, so a failure leaves the row failed with the error in ``logs``.
* **Lock timeouts** (55P03) roll back cleanly and are retried with growing lock timeouts and pauses
  (GitLab's ``with_lock_retries``): a busy table delays the migration instead of queueing every writer
  behind an ACCESS EXCLUSIVE request.
* A **CONCURRENTLY** migration (one statement) runs outside a transaction, with session timeouts, once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from charhub_ops.errors import ConfigError, DatabaseError
from charhub_ops.migrations import ledger
from charhub_ops.migrations.plan import MigrationFile, Plan, blocking_reason, make_plan
from charhub_ops.pgerrors import db_errors
from charhub_ops.pgurl import PgUrl
from charhub_ops.postgres import PsycopgSession

__all__ = ["LOCK_KEY", "RunnerOptions", "Applied", "RunResult", "lock_retry_schedule", "advisory_lock", "apply_one",
           "apply_pending", "current_plan", "migrate_locked"]

LOCK_KEY = 72707369  # prisma-engines: the advisory lock key of the schema engine

HOLDER_SQL = """SELECT l.pid, coalesce(a.application_name, ''), coalesce(a.client_addr::text, 'local')
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = %s AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


@dataclass(frozen=True)
class RunnerOptions:
    lock_wait: float = 60.0  # seconds to wait for the advisory lock
    lock_timeout: float = 5.0  # the last (longest) lock_timeout of the retry schedule, seconds
    lock_retries: int = 10  # attempts of a migration hitting lock timeouts
    statement_timeout: float = 900.0  # seconds; 0 = none
    poll: float = 0.5  # advisory lock polling interval


@dataclass
class Applied:
    name: str
    seconds: float
    attempts: int = 1
    lock_timeouts: list[float] = field(default_factory=list)


def lock_retry_schedule(final_timeout: float, attempts: int, first: float = 0.1,
                        max_pause: float = 3.0) -> list[tuple[float, float]]:
    """(lock_timeout, pause after a timeout) per attempt, in seconds: lock timeouts grow geometrically from
    ``first`` to ``final_timeout``; pauses grow with them (half the timeout, at most ``max_pause``)."""
    if attempts <= 1:
        return [(final_timeout, 0.0)]
    first = min(first, final_timeout)
    ratio = (final_timeout / first) ** (1 / (attempts - 1))
    steps = [round(first * ratio**i, 3) for i in range(attempts)]
    steps[-1] = final_timeout
    return [(t, round(min(t / 2, max_pause), 3) if i < attempts - 1 else 0.0) for i, t in enumerate(steps)]


def _holder(session: PsycopgSession) -> str:
    with db_errors("look up the advisory lock holder"):
        rows = session.conn.execute(HOLDER_SQL, [LOCK_KEY]).fetchall()
    if not rows:
        return "another session"
    pid, app, addr = rows[0]
    return f"pid {pid} ({app or 'no application_name'}, {addr})"


@contextmanager
def advisory_lock(session: PsycopgSession, wait: float, poll: float = 0.5,
                  sleep: Callable[[float], None] = time.sleep) -> Iterator[None]:
    """Hold Prisma's advisory lock on ``session`` (dedicated) for the block; DatabaseError after ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        with db_errors("pg_try_advisory_lock"):
            got = session.conn.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]
        if got:
            break
        if time.monotonic() >= deadline:
            raise DatabaseError(f"migrate: the migration lock (pg_advisory_lock {LOCK_KEY}) is held by "
                                f"{_holder(session)}; waited {wait:g} s (is the app running `prisma migrate "
                                f"deploy`?). Nothing was applied.", transient=True)
        sleep(min(poll, max(deadline - time.monotonic(), 0.01)))
    try:
        yield
    finally:
        with db_errors("pg_advisory_unlock"):
            if not session.conn.closed:
                session.conn.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 0)


def _error_text(exc: psycopg.Error) -> str:
    """What goes into ``logs``: the server's message and SQLSTATE, like Prisma's database error."""
    diag = getattr(exc, "diag", None)
    lines = [str(exc).strip()]
    if getattr(exc, "sqlstate", None):
        lines.append(f"Database error code: {exc.sqlstate}")
    if diag is not None and diag.statement_position:
        lines.append(f"Position: {diag.statement_position}")
    return "\n".join(lines)


def _end_transaction(conn: psycopg.Connection) -> None:
    """After a failure: a file with its own BEGIN leaves an aborted transaction open; roll it back."""
    if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.execute("ROLLBACK")


def _run_in_transaction(conn: psycopg.Connection, script: str, lock_timeout: float, statement_timeout: float) -> None:
    """One simple-protocol query, as Prisma sends it (psycopg uses the simple protocol for a query without
    parameters): one implicit transaction, timeouts SET LOCAL first. A failure leaves nothing behind."""
    prefix = (f"SET LOCAL lock_timeout = '{_ms(lock_timeout)}ms';\n"
              f"SET LOCAL statement_timeout = '{_ms(statement_timeout)}ms';\n")
    try:
        conn.execute(prefix + script)
    except psycopg.Error:
        _end_transaction(conn)
        raise


def _run_concurrently(conn: psycopg.Connection, script: str, lock_timeout: float, statement_timeout: float) -> None:
    conn.execute(f"SET lock_timeout = '{_ms(lock_timeout)}ms'")
    conn.execute(f"SET statement_timeout = '{_ms(statement_timeout)}ms'")
    try:
        conn.execute(script)
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.execute("RESET lock_timeout; RESET statement_timeout")


def _attempts(file: MigrationFile, script: str, conn: psycopg.Connection, opts: RunnerOptions,
              sleep: Callable[[float], None], applied: Applied) -> None:
    """Run the script, retrying lock timeouts along the schedule; re-raises the last error."""
    if file.concurrent:
        _run_concurrently(conn, script, opts.lock_timeout, opts.statement_timeout)
        return
    schedule = lock_retry_schedule(opts.lock_timeout, opts.lock_retries)
    for attempt, (timeout, pause) in enumerate(schedule, 1):
        applied.attempts, applied.lock_timeouts = attempt, [*applied.lock_timeouts, timeout]
        try:
            _run_in_transaction(conn, script, timeout, opts.statement_timeout)
            return
        except psycopg.errors.LockNotAvailable:
            if attempt == len(schedule):
                raise
            sleep(pause)


def apply_one(conn: psycopg.Connection, file: MigrationFile, path: Path, opts: RunnerOptions,
              sleep: Callable[[float], None] = time.sleep, schema: str = "public") -> Applied:
    """Insert the ledger row, run the migration, mark it finished — or failed, with the error, and raise."""
    script = path.read_bytes().decode("utf-8")
    started = time.monotonic()
    applied = Applied(file.name, 0.0)
    row_id = ledger.record_started(conn, file.name, file.checksum, schema)
    try:
        _attempts(file, script, conn, opts, sleep, applied)
    except psycopg.Error as exc:
        try:
            ledger.record_failed(conn, row_id, _error_text(exc), schema)
        except DatabaseError:  # the connection died with the migration: the row stays as it is, as with Prisma
            pass
        raise _failure(file, exc, applied) from exc
    ledger.record_finished(conn, row_id, schema)
    applied.seconds = round(time.monotonic() - started, 3)
    return applied


def _failure(file: MigrationFile, exc: psycopg.Error, applied: Applied) -> DatabaseError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    retried = f" after {applied.attempts} attempts (lock timeouts {applied.lock_timeouts[0]:g}–" \
              f"{applied.lock_timeouts[-1]:g} s)" if isinstance(exc, psycopg.errors.LockNotAvailable) else ""
    extra = " An INVALID index may remain: drop it (DROP INDEX CONCURRENTLY) first." if file.concurrent else ""
    state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
    return DatabaseError(
        f"migrate: {file.name} failed{retried}: {first}{state}. Its transaction was rolled "
        f"back and its row in _prisma_migrations is marked failed (Prisma P3018).{extra} Fix it, then "
        f"`charhub-ops migrate resolve --rolled-back {file.name}` and run again.")


@dataclass
class RunResult:
    plan: Plan
    applied: list[Applied]
    failed: str | None = None
    error: DatabaseError | None = None


def apply_pending(conn: psycopg.Connection, files: dict[str, MigrationFile], paths: dict[str, Path],
                  pending: list[str], opts: RunnerOptions, sleep: Callable[[float], None] = time.sleep,
                  ) -> tuple[list[Applied], str | None, DatabaseError | None]:
    """Apply ``pending`` in order (the caller holds the advisory lock); stop at the first failure, which is
    returned with its name rather than raised, so the caller can report what did get applied."""
    done: list[Applied] = []
    for name in pending:
        try:
            done.append(apply_one(conn, files[name], paths[name], opts, sleep))
        except DatabaseError as exc:
            return done, name, exc
    return done, None, None


def current_plan(conn: psycopg.Connection, files: list[MigrationFile]) -> Plan:
    return make_plan(files, ledger.read_rows(conn))


def migrate_locked(url: PgUrl, files: list[MigrationFile], paths: dict[str, Path], opts: RunnerOptions,
                   allow_drift: bool = False, sleep: Callable[[float], None] = time.sleep) -> RunResult:
    """Take the lock, re-plan under it (the app may have migrated meanwhile), refuse on a failed migration
    or drift, apply what is pending. Raises DatabaseError (lock), ConfigError (blocked)."""
    with PsycopgSession(url) as lock_session, advisory_lock(lock_session, opts.lock_wait, opts.poll, sleep):
        with PsycopgSession(url) as work:
            ledger.ensure_ledger(work.conn)
            plan = current_plan(work.conn, files)
            reason = blocking_reason(plan, allow_drift)
            if reason:
                raise ConfigError(f"migrate: {reason}")
            done, failed, error = apply_pending(work.conn, {f.name: f for f in files}, paths, plan.pending,
                                                opts, sleep)
    return RunResult(plan, done, failed, error)
