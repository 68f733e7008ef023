"""CLI commands of the retention pipeline.

* ``charhub-ops backups prune``: runs the Prefect ``prune`` flow on a repository (``--dry-run`` to preview).
* ``charhub-ops retention plan``: previews a policy on ``[{"id", "time"}]`` JSON read from stdin; no
  repository, no Prefect.

Policy options left out take their values from the settings (``CHARHUB_OPS_KEEP_DAILY`` …). Bad input
(a count below -1, an unparseable duration, bad JSON) is one red line and exit code 1.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from charhub_ops.cli import (
    JsonOpt,
    RepoOpt,
    _open_repo,
    _prepare_prefect,
    _print_json,
    app,
    backups_app,
    err,
    run_guarded,
)
from charhub_ops.errors import PolicyError
from charhub_ops.retention import (
    SETTINGS_FIELDS,
    RetentionPlan,
    RetentionPolicy,
    plan_from_records,
    plan_to_json,
    policy_from_settings,
)

__all__ = ["retention_app", "backups_prune", "retention_plan"]

retention_app = typer.Typer(help="Retention policy tools (no repository needed).", no_args_is_help=True)
app.add_typer(retention_app, name="retention")

_DEFAULT = " Default: settings."
KeepLastOpt = Annotated[int | None, typer.Option(help="Keep the newest N backups (-1 = all, 0 = off)." + _DEFAULT)]
KeepHourlyOpt = Annotated[int | None, typer.Option(help="Keep the newest backup of each of N hours." + _DEFAULT)]
KeepDailyOpt = Annotated[int | None, typer.Option(help="Keep the newest backup of each of N days (7)." + _DEFAULT)]
KeepWeeklyOpt = Annotated[int | None, typer.Option(help="Keep the newest backup of each of N ISO weeks (4)."
                                                        + _DEFAULT)]
KeepMonthlyOpt = Annotated[int | None, typer.Option(help="Keep the newest backup of each of N months (6)."
                                                         + _DEFAULT)]
KeepYearlyOpt = Annotated[int | None, typer.Option(help="Keep the newest backup of each of N years." + _DEFAULT)]
KeepWithinOpt = Annotated[str | None, typer.Option(help="Keep every backup within D of the newest "
                                                        "(7d, 2w, 1y6m, 36h)." + _DEFAULT)]
MinKeepOpt = Annotated[int | None, typer.Option(help="Never keep fewer complete backups than N (3)." + _DEFAULT)]


def _policy_options(options: dict[str, Any]) -> dict[str, Any]:
    """The policy options among a command's parameters (``locals()`` at its start)."""
    return {name: options[name] for name in SETTINGS_FIELDS}


def _policy(overrides: dict[str, Any]) -> RetentionPolicy:
    from charhub_ops.settings import load_settings

    return policy_from_settings(load_settings(), **overrides)


@backups_app.command("prune")
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
    overrides = _policy_options(locals())
    run_guarded(lambda: (_open_repo(repository), _policy(overrides)))  # fail fast, before Prefect starts
    _prepare_prefect()
    from flows.prune import prune_flow

    out = run_guarded(lambda: prune_flow(repository=repository, dry_run=dry_run, database=database, **overrides))
    if as_json:
        _print_json(out)
        return
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


def _read_records(text: str) -> list[dict]:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"stdin: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                          'expected [{"id": "...", "time": "ISO-8601"}, ...]') from None


@retention_app.command("plan")
def retention_plan(
    keep_last: KeepLastOpt = None, keep_hourly: KeepHourlyOpt = None, keep_daily: KeepDailyOpt = None,
    keep_weekly: KeepWeeklyOpt = None, keep_monthly: KeepMonthlyOpt = None, keep_yearly: KeepYearlyOpt = None,
    keep_within: KeepWithinOpt = None, min_keep: MinKeepOpt = None, as_json: JsonOpt = False,
) -> None:
    """Preview a policy on backups read from stdin: [{"id": "...", "time": "ISO-8601"}, ...]."""
    overrides = _policy_options(locals())
    plan: RetentionPlan = run_guarded(lambda: plan_from_records(_read_records(sys.stdin.read()), _policy(overrides)))
    if as_json:
        _print_json(plan_to_json(plan))
        return
    rows = [(k.time, k.id, "keep", ", ".join(k.reasons)) for k in plan.keep]
    rows += [(c.time, c.id, "remove", "") for c in plan.remove]
    table = Table("backup id", "time (UTC)", "action", "reasons")
    for time, backup_id, action, reasons in sorted(rows, key=lambda r: r[0], reverse=True):
        table.add_row(backup_id, time.isoformat().replace("+00:00", "Z"), action, reasons)
    Console().print(table)
