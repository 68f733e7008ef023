"""Thin Prefect tasks over charhub_ops.migrations: configuration, plan, lint, apply, checks, history, reports."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from pydantic import BaseModel

from charhub_ops.errors import ConfigError
from charhub_ops.migrations import ledger, lint, prisma, runner
from charhub_ops.migrations.checks import check_urls
from charhub_ops.migrations.plan import plan_changes
from charhub_ops.pgurl import PgUrl
from charhub_ops.postgres import server_info
from charhub_ops.settings import Settings
from tasks.common import RETRY, database_url
from tasks.locks import database_lock

__all__ = ["MigrateConfig", "resolve_migrate_config", "plan_migrations", "lint_migrations", "apply_migrations",
           "check_health", "record_start", "record_outcome", "migration_report"]


class MigrateConfig(BaseModel):
    model_config = {"arbitrary_types_allowed": True}

    url: PgUrl
    options: runner.RunnerOptions
    big_rows: int
    big_bytes: int
    health_urls: list[str]
    health_timeout: float


@task(name="resolve-migrate-config", cache_policy=NONE)
def resolve_migrate_config(settings: Settings, lock_wait: float | None,
                           database_url_secret: str | None) -> MigrateConfig:
    """The run's settings (read by the flow) with its ``lock_wait`` over them, and the database URL."""
    migrate = settings.migrate
    return MigrateConfig(url=database_url(settings.database, database_url_secret),
                         options=migrate.runner_options(lock_wait), big_rows=migrate.big_table_rows,
                         big_bytes=migrate.big_table_bytes, health_urls=migrate.health_urls,
                         health_timeout=migrate.health_timeout)


@task(name="plan-migrations", cache_policy=NONE, **RETRY)
def plan_migrations(url: PgUrl, directory: str) -> tuple[dict, int]:
    """The plan (applied / pending / failed / drift, the failed migrations' logs, and ``checksums``: name →
    checksum of each pending file, which the lint and the apply step hold the directory to) and the server's
    major version."""
    files, _ = ledger.read_migrations(directory)
    with runner.migration_session(url) as session:
        plan = runner.current_plan(session.conn, files, runner.ledger_schema(url))
        major = server_info(session).major
    checksums = {f.name: f.checksum for f in files if f.name in plan.pending}
    return {**plan.as_dict(), "failed_logs": plan.logs, "checksums": checksums}, major


def _unchanged(directory: str, planned: dict[str, str], url: PgUrl | None = None) -> list:
    """The directory's files; ConfigError when a planned file changed or went — or, with ``url``, when what
    the ledger leaves pending is not exactly the plan (a new file, one applied meanwhile)."""
    files, _ = ledger.read_migrations(directory)
    pending = list(planned)
    if url is not None:
        with runner.migration_session(url) as session:
            pending = runner.current_plan(session.conn, files, runner.ledger_schema(url)).pending
    changes = plan_changes(planned, files, pending)
    if changes:
        raise ConfigError(runner.changed_error(changes))
    return files


@task(name="lint-migrations", cache_policy=NONE, **RETRY)
def lint_migrations(url: PgUrl, directory: str, planned: dict[str, str], major: int, big_rows: int,
                    accept: list[str], big_bytes: int = 1 << 30) -> list[dict]:
    """squawk + live sizes on the planned files; the directory is checked against the plan after squawk ran."""
    files = _unchanged(directory, planned)
    with runner.migration_session(url) as session:
        items = lint.lint_pending(session.conn, Path(directory), files, list(planned), major, big_rows,
                                  lint.parse_accepts(accept), big_bytes=big_bytes)
    _unchanged(directory, planned)
    return [i.as_dict() for i in items]


@task(name="apply-migrations", cache_policy=NONE)  # no retries: --lock-wait is the wait, a failure is recorded
def apply_migrations(url: PgUrl, directory: str, options: runner.RunnerOptions, allow_drift: bool,
                     prisma_container: str | None = None, planned: dict[str, str] | None = None) -> dict:
    """Lock, check the directory and the ledger against ``planned`` (name → checksum, as linted and
    previewed), apply exactly that natively — or run Prisma's own deploy in ``prisma_container`` once the
    directory is checked. Returns applied (name, seconds, attempts) and the failure (name, error) if any."""
    with database_lock(url.dbname):
        if prisma_container:
            files = _unchanged(directory, planned, url) if planned is not None else ledger.read_migrations(directory)[0]
            result = prisma.deploy_in_container(url, prisma_container, files, options)
        else:
            result = runner.migrate_plan(url, directory, planned, options, allow_drift=allow_drift)
    return {"applied": [{"migration": a.name, "seconds": a.seconds, "attempts": a.attempts} for a in result.applied],
            "failed": result.failed, "error": str(result.error) if result.error else None}


@task(name="check-health", cache_policy=NONE)
def check_health(urls: list[str], timeout: float) -> list[dict]:
    return [r.__dict__ for r in check_urls(urls, timeout)]


@task(name="record-migration-start", cache_policy=NONE, **RETRY)
def record_start(url: PgUrl, run_id: str, operator: str, plan: dict, accept: list[str], no_backup: bool,
                 allow_drift: bool, backup_id: str | None) -> None:
    with runner.migration_session(url) as session:
        ledger.history_started(session.conn, run_id, operator, plan, accept, no_backup, allow_drift, backup_id)


@task(name="record-migration-outcome", cache_policy=NONE, **RETRY)
def record_outcome(url: PgUrl, run_id: str, outcome: str, applied: list[str], error: str | None) -> None:
    with runner.migration_session(url) as session:
        ledger.history_finished(session.conn, run_id, outcome, applied, error)


def _lint_rows(items: list[dict]) -> list[str]:
    rows = ["| migration | line | rule | table | rows | size | lock | verdict |", "|---|---|---|---|---|---|---|---|"]
    for i in items:
        size = f"{i['table_bytes'] / 1048576:.1f} MiB" if i["table_bytes"] is not None else "—"
        rows.append(f"| {i['migration']} | {i['line']} | `{i['rule']}` | {i['table'] or '—'} "
                    f"| {i['table_rows'] if i['table_rows'] is not None else '—'} | {size} | {i['lock'] or '—'} "
                    f"| **{i['verdict']}**: {i['reason']} |")
    return rows


def _headline(summary: dict) -> list[str]:
    drift = ", ".join(f"{d['migration']} ({d['reason']})" for d in summary["drift"]) or "none"
    if summary["drift"] and summary["allow_drift"]:
        drift += " — allowed (--allow-drift)"
    backup = summary["backup_id"] or ("skipped (--no-backup)" if summary["no_backup"] else "taken before applying")
    pending = ", ".join(f"`{p}`" for p in summary["pending"]) or "none"
    return [f"# Migration {summary['kind']}: `{summary['database']}` — {summary['outcome']}", "",
            f"- pending ({len(summary['pending'])}): {pending}",
            f"- applied before: {len(summary['applied_before'])}; failed: {', '.join(summary['failed']) or 'none'}",
            f"- drift: {drift}", f"- backup: {backup}",
            f"- lock: pg_advisory_lock 72707369, waiting up to {summary['lock_wait']:g} s",
            "- apply: " + (f"`npx prisma migrate deploy` in container `{summary['prisma_container']}`"
                           if summary.get("prisma_container") else "natively, one transaction per migration"),
            f"- accepted: {', '.join(summary['accept']) or 'none'}"]


@task(name="migration-report", cache_policy=NONE)
def migration_report(summary: dict) -> str:
    """The preview (``summary['kind'] == 'preview'``) or the report as a markdown artifact."""
    lines = _headline(summary)
    if summary.get("applied"):
        lines.append("- applied now: " + ", ".join(f"`{a}`" for a in summary["applied"]))
    for check in summary.get("checks", []):
        lines.append(f"- health {check['url']}: {'ok' if check['ok'] else 'FAILED'} ({check['detail']})")
    if summary.get("error"):
        lines += ["", f"**Error**: {summary['error']}"]
    if summary["lint"]:
        lines += ["", "## Lint (squawk + live table sizes)", "", *_lint_rows(summary["lint"])]
    markdown = "\n".join(lines)
    create_markdown_artifact(markdown, key=f"migration-{summary['kind']}",
                             description=f"charhub-ops migration {summary['kind']}")
    return markdown
