"""`charhub-ops backups list` (complete backups, newest first) and `backups prune` (the Prefect ``prune`` flow)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from charhub_ops.cli.app import JsonOpt, RepoOpt, err, open_repo, prepare_prefect, print_json, run_guarded
from charhub_ops.cli.retention import (
    KeepDailyOpt,
    KeepHourlyOpt,
    KeepLastOpt,
    KeepMonthlyOpt,
    KeepWeeklyOpt,
    KeepWithinOpt,
    KeepYearlyOpt,
    MinKeepOpt,
    choose,
    policy_line,
    policy_options,
)

__all__ = ["app", "backups_list", "backups_prune"]

app = typer.Typer(help="Inspect and prune the backups of a repository.", no_args_is_help=True)


@app.command("list")
def backups_list(repository: RepoOpt = None, database: Annotated[str | None, typer.Option(
        help="Only this database (physical backups hold the whole cluster: always listed).")] = None,
        as_json: JsonOpt = False) -> None:
    """List complete backups, newest first: the logical ones of the repository and, when ``pitr_repository`` is
    set, pgBackRest's physical backups of the cluster beside them (column ``kind``)."""
    from charhub_ops.backup.catalog import backup_summary, list_backups_verified

    def work() -> list[dict]:
        from charhub_ops.pitr.catalog import physical_backups
        from charhub_ops.settings import load_settings

        storage = open_repo(repository)
        rows = [{"kind": "logical", **backup_summary(storage.url, m, v)}
                for m, v in list_backups_verified(storage, database)]
        rows += physical_backups(load_settings(repository=repository), _warn)
        return sorted(rows, key=lambda r: r["finished_at"], reverse=True)

    rows = run_guarded(work)
    if as_json:
        print_json(rows)
        return
    _print_backups(rows)


def _print_backups(rows: list[dict]) -> None:
    from charhub_ops.fmt import human_bytes

    table = Table("kind", "backup id", "database", "finished UTC", "size", "tables", "rows", "encrypted", "verified")
    for column in table.columns[:4]:
        column.no_wrap = True
    for r in rows:
        verified = "—" if r["verified_ok"] is None else ("ok" if r["verified_ok"] else "FAILED")
        encrypted = ("age" if r["kind"] == "logical" else "aes") if r["encrypted"] else "no"
        table.add_row(r["kind"], r["backup_id"], r["database"], r["finished_at"][:16].replace("T", " "),
                      human_bytes(r["size_bytes"]), _count(r["tables"]), _count(r["rows"]), encrypted, verified)
    Console().print(table)


def _warn(line: str) -> None:
    err.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)


def _count(n: int | None) -> str:
    return "—" if n is None else str(n)


@app.command("prune")
def backups_prune(
    repository: RepoOpt = None,
    keep_last: KeepLastOpt = None, keep_hourly: KeepHourlyOpt = None, keep_daily: KeepDailyOpt = None,
    keep_weekly: KeepWeeklyOpt = None, keep_monthly: KeepMonthlyOpt = None, keep_yearly: KeepYearlyOpt = None,
    keep_within: KeepWithinOpt = None, min_keep: MinKeepOpt = None,
    database: Annotated[str | None, typer.Option(help="Only this database (default: all).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan and preview; delete nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply the retention policy and clean up leftovers (runs the Prefect 'prune' flow)."""
    options = policy_options(locals())
    choice = run_guarded(lambda: (open_repo(repository), choose(options))[1])  # fail fast, before Prefect
    from flows.params import Retention, build

    policy = run_guarded(lambda: build(Retention, **options))
    prepare_prefect()
    from flows.prune import prune_flow

    out = run_guarded(lambda: prune_flow(repository=repository, dry_run=dry_run, database=database, policy=policy))
    if as_json:
        print_json(out)
        return
    err.print(policy_line(choice), highlight=False, soft_wrap=True)
    _print_prune(out)


def _print_prune(out: dict) -> None:
    table = Table("database", "backup id", "action", "reasons")
    removed = set(out["removed"])
    for db in out["databases"]:
        name = db["database"]
        rows = [(k["id"], "keep", ", ".join(k["reasons"])) for k in db["keep"]]
        rows += [(i, "remove" if out["dry_run"] else "removed" if f"{name}/{i}" in removed else "refused", "")
                 for i in db["remove"]]
        rows += [(i, "in progress", "no manifest yet") for i in db["in_progress"]]
        for backup_id, action, reasons in sorted(rows, reverse=True):  # ids sort by time
            table.add_row(name, backup_id, action, reasons)
    for orphan in out["orphans"]:
        database, _, backup_id = orphan.rpartition("/")
        table.add_row(database, backup_id, "orphan", "no manifest for over 24 h: its objects are deleted")
    Console().print(table)
    for warning in out["warnings"]:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    verb = "would remove" if out["dry_run"] else "removed"
    count = sum(len(db["remove"]) for db in out["databases"]) if out["dry_run"] else len(out["removed"])
    err.print(f"{verb} {count} backups, {len(out['orphans'])} orphans, {len(out['incomplete_uploads'])} "
              f"incomplete uploads, {len(out['partial_files'])} temporary files", highlight=False)
