"""``--prisma-container``: let the app's own Prisma apply the migrations, inside its container.

The same plan, lint, backup and checks run around it; only the apply step differs. Prisma's
``migrate deploy`` takes the advisory lock 72707369 itself (blocking, with its own 10 s limit), so this
side waits until the lock is free (polled, up to ``lock_wait``) and releases it at once, then runs
``npx prisma migrate deploy`` through the Docker API. What got applied is read back from the ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from charhub_ops.docker_exec import ContainerExec
from charhub_ops.errors import DatabaseError
from charhub_ops.migrations.plan import MigrationFile
from charhub_ops.migrations.runner import (
    Applied,
    RunnerOptions,
    RunResult,
    advisory_lock,
    current_plan,
    ledger_schema,
    migration_session,
)
from charhub_ops.pgurl import PgUrl
from charhub_ops.postgres import PsycopgSession

__all__ = ["PRISMA_DEPLOY", "deploy_in_container"]

PRISMA_DEPLOY = ["npx", "prisma", "migrate", "deploy"]


def _wait_for_lock(url: PgUrl, opts: RunnerOptions, sleep: Callable[[float], None]) -> None:
    with PsycopgSession(url) as session, advisory_lock(session, opts.lock_wait, opts.poll, sleep):
        pass  # free now: Prisma takes it itself


def deploy_in_container(url: PgUrl, container: str, files: list[MigrationFile], opts: RunnerOptions,
                        command: list[str] | None = None, sleep: Callable[[float], None] = time.sleep) -> RunResult:
    """Run Prisma's deploy in ``container``; the result says what the ledger shows it applied (and failed)."""
    with migration_session(url) as session:
        before = current_plan(session.conn, files, ledger_schema(url))
    _wait_for_lock(url, opts, sleep)
    started = time.monotonic()
    error: DatabaseError | None = None
    try:
        ContainerExec(container).run(command or PRISMA_DEPLOY)
    except DatabaseError as exc:  # the command's exit status; the ledger says which migration failed
        error = DatabaseError(f"migrate: `{' '.join(command or PRISMA_DEPLOY)}` in container '{container}' "
                              f"failed: {exc}")
    with migration_session(url) as session:
        after = current_plan(session.conn, files, ledger_schema(url))
    seconds = round(time.monotonic() - started, 3)
    applied = [Applied(name, seconds) for name in before.pending if name in after.applied]
    failed = next((name for name in after.failed if name not in before.failed), None)
    if error is None and failed:
        error = DatabaseError(f"migrate: Prisma left {failed} failed: {after.logs.get(failed, '')[:300]}")
    return RunResult(after, applied, failed if error else None, error)
