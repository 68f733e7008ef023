"""Apply pending migrations natively, the way ``prisma migrate deploy`` does, with lock discipline.

* **Lock**: ``pg_try_advisory_lock(72707369)`` — Prisma's key — polled on a dedicated session until
  ``lock_wait`` runs out; never a blocking ``pg_advisory_lock``. The app's own ``migrate deploy`` and
  this run exclude each other.
* **The plan**: under the lock the directory and the ledger are read again; the run applies exactly the
  planned migrations (names and checksums, as linted and previewed) or stops with nothing applied.
* **Each migration** runs as Prisma runs it — simple-protocol queries, one implicit transaction unless the
  file has its own BEGIN/COMMIT — under **session-level** ``lock_timeout`` / ``statement_timeout`` that hold
  for the whole file (also after the file's own COMMIT) and are reset after it. A file is sent in segments
  cut after each of its own COMMIT/ROLLBACKs (the same transactions as one query), so a failure says how far
  its commits got. Its ledger row is written before and after, outside those transactions, so a failure
  leaves the row failed with the error in ``logs``.
* **Lock timeouts** (55P03) roll the segment back and it is retried with growing lock timeouts and pauses
  (GitLab's ``with_lock_retries``): a busy table delays the migration instead of queueing every writer
  behind an ACCESS EXCLUSIVE request. A segment already committed is never run again.
* A **CONCURRENTLY** migration (one statement) runs outside a transaction with no lock_timeout and its own
  statement timeout; an INVALID index it leaves on failure is dropped (:mod:`.concurrent`).
* ``?schema=X`` in the URL: the ledger lives in ``X`` and the migrations run with ``search_path = "X"``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from charhub_ops.errors import ConfigError, DatabaseError
from charhub_ops.migrations import ledger
from charhub_ops.migrations.concurrent import run_concurrently
from charhub_ops.migrations.plan import MigrationFile, Plan, blocking_reason, make_plan, plan_changes
from charhub_ops.migrations.sqltext import transaction_segments
from charhub_ops.pgerrors import db_errors
from charhub_ops.pgurl import PgUrl
from charhub_ops.postgres import PsycopgSession

__all__ = ["LOCK_KEY", "RunnerOptions", "Applied", "RunResult", "lock_retry_schedule", "advisory_lock", "apply_one",
           "apply_pending", "current_plan", "migrate_locked", "migrate_plan", "migration_session", "ledger_schema",
           "session_timeouts"]

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
    concurrent_timeout: float = 3600.0  # statement_timeout of a CONCURRENTLY migration (no lock_timeout); 0 = none
    poll: float = 0.5  # advisory lock polling interval


@dataclass
class Applied:
    name: str
    seconds: float
    attempts: int = 1
    lock_timeouts: list[float] = field(default_factory=list)
    committed_line: int | None = None  # the last line the file's own COMMITs made durable


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


@contextmanager
def session_timeouts(conn: psycopg.Connection, statement_timeout: float) -> Iterator[None]:
    """Session-level ``statement_timeout`` (and, per attempt, ``lock_timeout``) for the whole file — they hold
    after the file's own COMMIT too, unlike SET LOCAL — reset afterwards, on success and on failure."""
    conn.execute(f"SET statement_timeout = '{_ms(statement_timeout)}ms'")
    try:
        yield
    finally:
        if not conn.closed:
            _end_transaction(conn)
            conn.execute("RESET lock_timeout; RESET statement_timeout")


def _run_segment(conn: psycopg.Connection, text: str, schedule: list[tuple[float, float]],
                 sleep: Callable[[float], None], applied: Applied) -> None:
    """One segment as one simple-protocol query (one implicit transaction unless it has its own BEGIN), with a
    growing session lock_timeout per attempt; a lock timeout rolls the segment back and it is tried again."""
    for attempt, (timeout, pause) in enumerate(schedule, 1):
        applied.attempts, applied.lock_timeouts = max(applied.attempts, attempt), [*applied.lock_timeouts, timeout]
        conn.execute(f"SET lock_timeout = '{_ms(timeout)}ms'")
        try:
            conn.execute(text)
            return
        except psycopg.Error as exc:
            _end_transaction(conn)
            if not isinstance(exc, psycopg.errors.LockNotAvailable) or attempt == len(schedule):
                raise
            sleep(pause)


def _run_file(conn: psycopg.Connection, script: str, opts: RunnerOptions, sleep: Callable[[float], None],
              applied: Applied) -> None:
    """The file cut after each of its own COMMIT/ROLLBACKs (sqltext.transaction_segments), segment by segment
    under session timeouts: a lock timeout retries only the segment that hit it (what an inner COMMIT made
    durable is not run twice), and ``applied.committed_line`` records how far the file's commits got."""
    schedule = lock_retry_schedule(opts.lock_timeout, opts.lock_retries)
    with session_timeouts(conn, opts.statement_timeout):
        for segment in transaction_segments(script):
            _run_segment(conn, segment.text, schedule, sleep, applied)
            if segment.commits:
                applied.committed_line = segment.last_line
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:  # rolled back on the way out
            raise psycopg.errors.InvalidTransactionState(
                "the file ends inside a transaction it opened (BEGIN without COMMIT); it was rolled back")


def apply_one(conn: psycopg.Connection, file: MigrationFile, script: str | Path, opts: RunnerOptions,
              sleep: Callable[[float], None] = time.sleep, schema: str = "public") -> Applied:
    """Insert the ledger row, run the migration (``script``: its text, or a path to read), mark it finished —
    or failed, with the error, and raise."""
    script = script.read_bytes().decode("utf-8") if isinstance(script, Path) else script
    started = time.monotonic()
    applied = Applied(file.name, 0.0, attempts=0)
    row_id = ledger.record_started(conn, file.name, file.checksum, schema)
    try:
        if file.concurrent:
            applied.attempts = 1
            run_concurrently(conn, script, opts.concurrent_timeout)
        else:
            _run_file(conn, script, opts, sleep, applied)
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
              f"{applied.lock_timeouts[-1]:g} s)" if isinstance(exc, psycopg.errors.LockNotAvailable) \
        and applied.lock_timeouts else ""
    state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
    if file.concurrent:
        done = " It ran outside a transaction. " + " ".join(getattr(exc, "__notes__", []))
        fix = f"Fix it, then `charhub-ops migrate resolve --rolled-back {file.name}` and run again."
    elif applied.committed_line:
        done = (f" The file committed up to line {applied.committed_line} (its own COMMIT); the rest was rolled "
                f"back.")
        fix = (f"Complete the rest by hand, then `charhub-ops migrate resolve --applied {file.name}`; or make the "
               f"file safe to run again, then `resolve --rolled-back {file.name}` and run again.")
    else:
        done = " Its transaction was rolled back: nothing of it was applied."
        fix = f"Fix it, then `charhub-ops migrate resolve --rolled-back {file.name}` and run again."
    return DatabaseError(f"migrate: {file.name} failed{retried}: {first}{state}.{done} Its row in "
                         f"_prisma_migrations is marked failed (Prisma P3018). {fix}")


@dataclass
class RunResult:
    plan: Plan
    applied: list[Applied]
    failed: str | None = None
    error: DatabaseError | None = None


def apply_pending(conn: psycopg.Connection, files: dict[str, MigrationFile], scripts: dict[str, str | Path],
                  pending: list[str], opts: RunnerOptions, sleep: Callable[[float], None] = time.sleep,
                  schema: str = "public") -> tuple[list[Applied], str | None, DatabaseError | None]:
    """Apply ``pending`` in order (the caller holds the advisory lock); stop at the first failure, which is
    returned with its name rather than raised, so the caller can report what did get applied."""
    done: list[Applied] = []
    for name in pending:
        try:
            done.append(apply_one(conn, files[name], scripts[name], opts, sleep, schema))
        except DatabaseError as exc:
            return done, name, exc
    return done, None, None


def ledger_schema(url: PgUrl) -> str:
    """Where ``_prisma_migrations`` lives: the URL's ``?schema=`` (as Prisma), else ``public``."""
    return url.prisma_schema or "public"


@contextmanager
def migration_session(url: PgUrl) -> Iterator[PsycopgSession]:
    """A session as Prisma's: with ``?schema=X`` in the URL, ``search_path`` is ``"X"`` (the migrations' SQL and
    unqualified names resolve there)."""
    with PsycopgSession(url) as session:
        if url.prisma_schema:
            with db_errors("set search_path"):
                session.conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(url.prisma_schema)))
        yield session


def current_plan(conn: psycopg.Connection, files: list[MigrationFile], schema: str = "public") -> Plan:
    return make_plan(files, ledger.read_rows(conn, schema))


def migrate_plan(url: PgUrl, directory: str | Path, planned: dict[str, str] | None, opts: RunnerOptions,
                 allow_drift: bool = False, sleep: Callable[[float], None] = time.sleep,
                 expected: list[MigrationFile] | None = None) -> RunResult:
    """Take the lock; under it read the directory and the ledger again, refuse on a failed migration or drift,
    and apply exactly ``planned`` ({name: checksum} of the pending migrations that were linted and previewed):
    if the files or what is pending differ from it, ConfigError and nothing is applied. ``planned=None``:
    whatever is pending under the lock (with ``expected``, the files as read before: their checksums).
    The scripts run are the bytes whose checksums were compared."""
    schema = ledger_schema(url)
    with PsycopgSession(url) as lock_session, advisory_lock(lock_session, opts.lock_wait, opts.poll, sleep):
        with migration_session(url) as work:
            files, scripts = ledger.read_migration_texts(directory)
            plan = current_plan(work.conn, files, schema)
            reason = blocking_reason(plan, allow_drift)
            if planned is None and expected is not None:
                known = {f.name: f.checksum for f in expected}
                planned = {n: known[n] for n in plan.pending if n in known}
            changes = plan_changes(planned, files, plan.pending) if planned is not None else []
            if reason or changes:
                raise ConfigError(f"migrate: {reason}" if reason else changed_error(changes))
            ledger.ensure_ledger(work.conn, schema)
            done, failed, error = apply_pending(work.conn, {f.name: f for f in files}, scripts, plan.pending,
                                                opts, sleep, schema)
    return RunResult(plan, done, failed, error)


def changed_error(changes: list[str]) -> str:
    return (f"migrate: the migrations changed after the plan was linted and previewed: {', '.join(changes)}. "
            f"Nothing was applied: run again to lint and preview the current plan.")


def migrate_locked(url: PgUrl, files: list[MigrationFile], paths: dict[str, Path], opts: RunnerOptions,
                   allow_drift: bool = False, sleep: Callable[[float], None] = time.sleep) -> RunResult:
    """:func:`migrate_plan` of the directory ``paths`` come from, for the pending ``files`` as the caller read
    them (the plan is: those checksums). Raises DatabaseError (lock), ConfigError (blocked, changed)."""
    if not paths:
        return RunResult(make_plan(files, []), [])
    directory = next(iter(paths.values())).parent.parent
    return migrate_plan(url, directory, None, opts, allow_drift, sleep, expected=files)
