"""`charhub-ops migrate` (runs the Prefect ``migrate`` flow), `migrate status` and `migrate resolve` (core only).

``migrate`` is both a command and a group: the group's callback takes the run's options and runs when no
subcommand is given.
"""

from __future__ import annotations

from typing import Annotated

import typer

from charhub_ops.cli.app import JsonOpt, err, prepare_prefect, print_json, run_guarded, use_database_url
from charhub_ops.errors import ConfigError, OpsError

__all__ = ["app"]

app = typer.Typer(help="Prisma migrations: plan, lint, back up, apply under Prisma's lock, check.",
                  invoke_without_command=True, no_args_is_help=False)

UrlOpt = Annotated[str | None, typer.Option("--database-url", help="The database (also DATABASE_URL).")]
DirOpt = Annotated[str | None, typer.Option("--migrations", help="Prisma migrations directory (<name>/migration.sql).")]


def _summary_lines(s: dict) -> None:
    err.print(f"[bold]{s['database']}[/]: {len(s['applied_before'])} applied before, "
              f"{len(s['planned'])} pending, {len(s['applied'])} applied now — {s['outcome']}", highlight=False)
    for name in s["planned"]:
        mark = "[green]✓[/]" if name in s["applied"] else "[red]✗[/]" if name in s["failed"] else "·"
        err.print(f"  {mark} {name}", highlight=False)
    for d in s["drift"]:
        err.print(f"  [yellow]drift[/] {d['migration']} ({d['reason']})", highlight=False)
    for i in s["lint"]:
        if i["verdict"] in ("block", "accepted", "warn"):
            err.print(f"  [yellow]{i['verdict']}[/] {i['migration']}:{i['line']} {i['rule']} "
                      f"{i['table'] or ''} {i['reason']}", highlight=False)
    notes = sum(i["verdict"] in ("note", "satisfied") for i in s["lint"])
    if notes:
        err.print(f"  {notes} lint notes (see the preview artifact or --json)", highlight=False)
    if s["backup_id"]:
        err.print(f"  backup {s['backup_id']}", highlight=False)


def _check_restore(restore: dict[str, bool], yes: bool) -> None:
    """A restore swaps the live database: on production the CLI needs --yes, as `restore --replace` does."""
    from charhub_ops.settings import load_settings

    asked = [f"--restore-on-{'health-' if kind == 'unhealthy' else ''}failure" for kind, on in restore.items() if on]
    if asked and not yes and load_settings().database.production:
        raise ConfigError(f"{asked[0]} on a production target (CHARHUB_OPS_PRODUCTION) needs --yes")


def _run(database_url, migrations, dry_run, no_backup, accept, allow_drift, lock_wait, restore: dict[str, bool],
         yes, prisma_container, as_json) -> None:
    from charhub_ops.migrations.ledger import read_migrations
    from charhub_ops.migrations.lint import parse_accepts
    from flows.params import MigrateApply, MigrateOverrides, build

    def check() -> dict:
        if migrations is None:
            raise ConfigError("--migrations: required (the Prisma migrations directory)")
        use_database_url(database_url)
        if not dry_run:  # a dry run restores nothing
            _check_restore(restore, yes)
        parse_accepts(accept)
        read_migrations(migrations)
        return {"apply": build(MigrateApply, lock_wait=lock_wait, prisma_container=prisma_container),
                "overrides": build(MigrateOverrides, accept=accept)}

    groups = run_guarded(check)
    prepare_prefect()
    from flows.migrate import cli_exceptions, migrate_flow

    def run() -> dict:
        try:
            with cli_exceptions(allow_drift=allow_drift, no_backup=no_backup):
                return migrate_flow(migrations_dir=migrations, dry_run=dry_run,
                                    restore_on_failure=restore["failed"],
                                    restore_on_health_failure=restore["unhealthy"], **groups)
        except OpsError as exc:  # the summary still goes out, then one error line
            details = getattr(exc, "details", None)
            if details:
                print_json(details) if as_json else _summary_lines(details)
            raise

    summary = run_guarded(run)
    print_json(summary) if as_json else _summary_lines(summary)


@app.callback(invoke_without_command=True)
def migrate(
    ctx: typer.Context,
    database_url: UrlOpt = None,
    migrations: DirOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan, lint and preview only.")] = False,
    no_backup: Annotated[bool, typer.Option("--no-backup", help="Do not back up first (recorded).")] = False,
    accept: Annotated[list[str] | None, typer.Option(
        "--accept", help="Accept a blocking lint finding: RULE or RULE:MIGRATION; repeatable (recorded).")] = None,
    allow_drift: Annotated[bool, typer.Option(
        "--allow-drift", help="Run although applied migrations changed or are missing (recorded).")] = False,
    lock_wait: Annotated[float | None, typer.Option(
        "--lock-wait", help="Seconds to wait for Prisma's migration lock (default: CHARHUB_OPS_MIGRATE_LOCK_WAIT).")
    ] = None,
    restore_on_failure: Annotated[bool, typer.Option(
        "--restore-on-failure", help="Restore the pre-migration backup if a migration fails (restore --replace).")
    ] = False,
    restore_on_health_failure: Annotated[bool, typer.Option(
        "--restore-on-health-failure",
        help="Restore the pre-migration backup if the migrations applied but the health checks fail.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm a --restore-on-* on a production target.")] = False,
    prisma_container: Annotated[str | None, typer.Option(
        "--prisma-container", help="Run the app's `npx prisma migrate deploy` in this container instead.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply pending Prisma migrations: plan → lint → preview → backup → lock + apply → checks → report."""
    if ctx.invoked_subcommand is not None:
        return
    restore = {"failed": restore_on_failure, "unhealthy": restore_on_health_failure}
    _run(database_url, migrations, dry_run, no_backup, accept or [], allow_drift, lock_wait, restore, yes,
         prisma_container, as_json)


def _files(migrations: str | None):
    from charhub_ops.migrations.ledger import read_migrations

    if migrations is None:
        raise ConfigError("--migrations: required (the Prisma migrations directory)")
    return read_migrations(migrations)[0]


@app.command()
def status(database_url: UrlOpt = None, migrations: DirOpt = None, as_json: JsonOpt = False) -> None:
    """Applied, pending, failed and drifted migrations (exit 1 when one failed or drifted)."""
    from charhub_ops.migrations.runner import current_plan, ledger_schema, migration_session

    def run():
        url, files = use_database_url(database_url), _files(migrations)
        with migration_session(url) as session:
            return url, current_plan(session.conn, files, ledger_schema(url))

    url, plan = run_guarded(run)
    if as_json:
        print_json({**plan.as_dict(), "failed_logs": plan.logs})
    else:
        err.print(f"[bold]{url.dbname}[/]: {len(plan.applied)} applied, {len(plan.pending)} pending, "
                  f"{len(plan.failed)} failed, {len(plan.drift)} drift", highlight=False)
        for name in plan.pending:
            err.print(f"  · pending {name}", highlight=False)
        for name in plan.failed:
            first = next(iter(plan.logs.get(name, "").splitlines()), "")
            err.print(f"  [red]✗ failed[/] {name}: {first}", highlight=False)
        for d in plan.drift:
            err.print(f"  [yellow]drift[/] {d.name} ({d.reason})", highlight=False)
    if plan.failed or plan.drift:
        raise typer.Exit(1)


@app.command()
def resolve(
    database_url: UrlOpt = None,
    migrations: DirOpt = None,
    applied: Annotated[str | None, typer.Option("--applied", help="Record NAME as applied (done by hand).")] = None,
    rolled_back: Annotated[str | None, typer.Option(
        "--rolled-back", help="Record the failed NAME as rolled back, so the next run applies it again.")] = None,
) -> None:
    """Repair a failed migration the way `prisma migrate resolve` does."""
    from charhub_ops.migrations import ledger
    from charhub_ops.migrations.runner import ledger_schema, migration_session

    def run() -> str:
        if (applied is None) == (rolled_back is None):
            raise ConfigError("resolve: give exactly one of --applied NAME or --rolled-back NAME")
        url, files = use_database_url(database_url), {f.name: f for f in _files(migrations)}
        name = applied or rolled_back
        if applied and name not in files:
            raise ConfigError(f"resolve --applied {name}: no such migration in {migrations} (P3017)")
        with migration_session(url) as session:
            if applied:
                ledger.resolve_applied(session.conn, files[name], ledger_schema(url))
                return f"{name} recorded as applied"
            count = ledger.resolve_rolled_back(session.conn, name, ledger_schema(url))
            return f"{name} recorded as rolled back ({count} failed row(s)); the next run applies it again"

    err.print(f"[green]✓[/] {run_guarded(run)}", highlight=False)
