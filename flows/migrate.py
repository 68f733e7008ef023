"""Apply CharHub's Prisma migrations: backed up, linted against live table sizes, locked, checked, undoable.

Runbook: resolve configuration → **plan** (applied / pending / failed / drift) → **lint** the pending
files (squawk + live table sizes) → **preview** artifact (``dry_run`` stops here) → **backup** (the
backup flow; skipped only with the CLI's ``--no-backup``, recorded) → **lock + apply** (Prisma's advisory lock, one
transaction per migration, lock-timeout retries; Prisma's ledger rows) → **checks** (health URLs) →
**report** artifact + event ``charhub.migration.applied``. A failure records the outcome, emits
``charhub.migration.failed``, notifies, and restores the backup taken before (restore flow, ``replace``:
production pauses a deployment run for an approval; the CLI needs ``--yes``) only when asked: a failed
migration with ``restore_on_failure``, failed health checks alone with ``restore_on_health_failure``; a run
stopped before anything was applied restores nothing. Every real attempt is recorded in
``charhub_ops.migration_runs``.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from charhub_ops.errors import ConfigError, DatabaseError, OpsError, VerificationError
from flows.params import (
    REPOSITORY_HELP,
    Access,
    MigrateApply,
    MigrateOverrides,
    Repository,
    RestoreSource,
    RestoreTarget,
    described,
)
from tasks.common import run_settings
from tasks.migrate import (
    apply_migrations,
    check_health,
    lint_migrations,
    migration_report,
    plan_migrations,
    record_outcome,
    record_start,
    resolve_migrate_config,
)
from tasks.notify import emit, notify_failure

__all__ = ["migrate_flow", "APPLIED", "FAILED"]

APPLIED = "charhub.migration.applied"
FAILED = "charhub.migration.failed"


def _blockers(summary: dict) -> list[str]:
    reasons = []
    if summary["failed"]:
        name = summary["failed"][0]
        reasons.append(f"migration {name} failed earlier and is not resolved (Prisma P3009): fix it, then "
                       f"`charhub-ops migrate resolve --rolled-back {name}` (to run it again) or "
                       f"`--applied {name}` (if completed by hand)")
    if summary["drift"] and not summary["allow_drift"]:
        reasons.append("drift: " + ", ".join(f"{d['migration']} ({d['reason']})" for d in summary["drift"])
                       + " (restore the files, or pass --allow-drift)")
    blocks = [i for i in summary["lint"] if i["verdict"] == "block"]
    if blocks:
        reasons.append("lint: " + "; ".join(f"{i['migration']}:{i['line']} {i['rule']} on {i['table']} "
                                            f"({i['reason']})" for i in blocks)
                       + " — accept with --accept RULE[:MIGRATION] if the lock is acceptable")
    return reasons


def _fail(exc: OpsError, summary: dict) -> OpsError:
    exc.details = summary  # the CLI prints it with --json
    return exc


# Exceptions only an operator at the CLI can make: not parameters, so no form, API call or trigger can skip the
# drift check or the backup. Recorded in the history like the rest. (allow_drift, no_backup)
_CLI_EXCEPTIONS: ContextVar[tuple[bool, bool]] = ContextVar("charhub_ops_migrate_exceptions", default=(False, False))


@contextmanager
def cli_exceptions(*, allow_drift: bool, no_backup: bool) -> Iterator[None]:
    """``--allow-drift`` / ``--no-backup`` for a migrate run started in this context (the CLI's)."""
    token = _CLI_EXCEPTIONS.set((allow_drift, no_backup))
    try:
        yield
    finally:
        _CLI_EXCEPTIONS.reset(token)


@flow(name="migrate", on_failure=[notify_failure])
@described
def migrate_flow(
    dry_run: Annotated[bool, Field(description="Plan, lint and preview only; nothing is changed")] = True,
    migrations_dir: Annotated[str, Field(
        description="Prisma migrations directory (<name>/migration.sql)")] = "prisma/migrations",
    restore_on_failure: Annotated[bool, Field(
        description="If a migration fails, restore the backup taken before the run (restore with replace; "
                    "production: approval)")] = False,
    restore_on_health_failure: Annotated[bool, Field(
        description="If the migrations applied but the health checks fail, restore the backup taken before the run "
                    "(restore with replace; production: approval)")] = False,
    repository: Annotated[Repository | None, Field(description="Backup repository; " + REPOSITORY_HELP)] = None,
    access: Annotated[Access, Field(description="How to reach the database server (docker_container: where "
                                                 "pg_dump runs for the backup)")] = Access(),
    apply: Annotated[MigrateApply, Field(description="How the migrations are applied")] = MigrateApply(),
    overrides: Annotated[MigrateOverrides, Field(
        description="Exceptions to the checks (recorded)")] = MigrateOverrides(),
) -> dict:
    """Plan, lint, preview; unless dry_run: back up, apply under the lock, check. Returns the summary."""
    accept, (allow_drift, no_backup) = overrides.accept or [], _CLI_EXCEPTIONS.get()
    cfg = resolve_migrate_config(run_settings(), apply.lock_wait, access.database_url_secret)
    plan, major = plan_migrations(cfg.url, migrations_dir)
    lint = lint_migrations(cfg.url, migrations_dir, plan["checksums"], major, cfg.big_rows, accept, cfg.big_bytes)
    summary = {"kind": "preview", "database": cfg.url.dbname, "outcome": "dry-run" if dry_run else "planned",
               "applied": [], "applied_before": plan["applied"], "planned": plan["pending"],
               "pending": plan["pending"], "failed": plan["failed"], "failed_logs": plan["failed_logs"],
               "drift": plan["drift"], "checksums": plan["checksums"], "lint": lint, "backup_id": None,
               "no_backup": no_backup,
               "allow_drift": allow_drift, "accept": accept, "lock_wait": cfg.options.lock_wait,
               "run_id": None, "checks": [], "error": None, "restored": None, "previous_database": None,
               "prisma_container": apply.prisma_container}
    blockers = _blockers(summary)
    if blockers:
        summary["outcome"] = "blocked"
    migration_report(summary)
    if dry_run or blockers:
        if blockers:
            summary["error"] = "; ".join(blockers)
            raise _fail(ConfigError("migrate: blocked: " + summary["error"]), summary)
        return summary
    if not plan["pending"]:
        summary.update(kind="report", outcome="up-to-date")
        migration_report(summary)
        return summary
    restore = {"failed": restore_on_failure, "unhealthy": restore_on_health_failure}
    return _act(cfg, migrations_dir, summary, restore, apply, repository, access)


def _act(cfg, migrations_dir: str, summary: dict, restore: dict[str, bool], apply: MigrateApply,
         repository: str | None, access: Access) -> dict:
    """Backup → history → lock + apply → checks → report; any failure is recorded, reported and raised."""
    summary.update(kind="report", run_id=str(flow_run.get_id() or uuid.uuid4()))
    if not summary["no_backup"]:
        from flows.backup import backup_flow

        (backup,) = backup_flow(repository=repository, access=access)
        summary["backup_id"] = backup["backup_id"]
    summary["operator"] = apply.operator or getpass.getuser()
    _record_start(cfg, summary)
    try:
        result = apply_migrations(cfg.url, migrations_dir, cfg.options, summary["allow_drift"], apply.prisma_container,
                                  summary["checksums"])
        summary["applied"] = [a["migration"] for a in result["applied"]]
        summary["pending"] = [p for p in summary["planned"] if p not in summary["applied"] and p != result["failed"]]
        if result["error"]:
            summary.update(outcome="failed", failed=[result["failed"]] if result["failed"] else [],
                           error=result["error"])
            raise DatabaseError(result["error"])
        summary["checks"] = check_health(cfg.health_urls, cfg.health_timeout) if cfg.health_urls else []
        if not all(c["ok"] for c in summary["checks"]):
            bad = [f"{c['url']} ({c['detail']})" for c in summary["checks"] if not c["ok"]]
            summary.update(outcome="unhealthy", error="health checks failed after migrating: " + ", ".join(bad))
            raise VerificationError(summary["error"], details=summary)
    except OpsError as exc:
        _on_failure(cfg, summary, exc, restore, repository, access)
        raise _fail(exc, summary) from None
    summary["outcome"] = "applied"
    record_outcome(cfg.url, summary["run_id"], "applied", summary["applied"], None)
    migration_report(summary)
    emit(APPLIED, f"charhub.database.{cfg.url.dbname}", _event(summary))
    return summary


def _event(summary: dict) -> dict:
    return {k: summary[k] for k in ("database", "run_id", "backup_id", "applied", "failed", "outcome", "error",
                                    "restored")}


def _record_start(cfg, summary: dict) -> None:
    record_start(cfg.url, summary["run_id"], summary["operator"],
                 {k: summary[k] for k in ("applied_before", "planned", "checksums", "failed", "drift")},
                 summary["accept"], summary["no_backup"], summary["allow_drift"], summary["backup_id"])


def _record_outcome(cfg, summary: dict) -> None:
    try:
        record_outcome(cfg.url, summary["run_id"], summary["outcome"], summary["applied"], summary["error"])
    except OpsError as exc:  # the database may be what failed: the report and the event still go out
        get_run_logger().error("could not record the outcome in charhub_ops.migration_runs: %s", exc)


def _wants_restore(summary: dict, restore: dict[str, bool]) -> bool:
    """Restore only what was asked for by name: a failed migration (``restore["failed"]``) or failed health
    checks after applying (``restore["unhealthy"]``); never a run that applied nothing and failed nothing."""
    if not summary["backup_id"]:
        return False
    if summary["outcome"] == "unhealthy":
        return restore["unhealthy"]
    return restore["failed"] and bool(summary["applied"] or summary["failed"])


def _on_failure(cfg, summary: dict, exc: OpsError, restore: dict[str, bool], repository: str | None,
                access: Access) -> None:
    """Record the failure; when asked for (:func:`_wants_restore`), restore the backup taken before the run
    (the failed database is kept under ``<db>_pre_restore_<ts>`` with its history) and record the run again in
    the restored database (its history predates the run); then report and emit ``charhub.migration.failed``."""
    if summary["outcome"] not in ("failed", "unhealthy"):
        summary.update(outcome="failed", error=str(exc))
    summary["error"] = summary["error"] or str(exc)
    _record_outcome(cfg, summary)
    if _wants_restore(summary, restore):
        from flows.restore import restore_flow

        try:
            restored = restore_flow(repository=repository,
                                    source=RestoreSource(source_database=cfg.url.dbname, backup=summary["backup_id"]),
                                    target=RestoreTarget(replace=True), access=access)
            summary.update(restored=restored["backup_id"], outcome=summary["outcome"] + ", restored",
                           previous_database=restored.get("previous_database"))
            _record_start(cfg, summary)
            _record_outcome(cfg, summary)
        except OpsError as restore_exc:
            summary["error"] += f"; restoring backup {summary['backup_id']} failed too: {restore_exc}"
    migration_report(summary)
    emit(FAILED, f"charhub.database.{cfg.url.dbname}", _event(summary))
