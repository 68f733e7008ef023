"""`charhub-ops retention plan`, and the policy options it shares with `backups prune`.

``retention plan`` previews a policy on ``[{"id", "time"}]`` JSON read from stdin; no repository, no
Prefect. Policy options mean what they mean to ``restic forget``: when any ``--keep-*`` option is given,
the options given are the whole policy; when none is, the settings' policy applies (``CHARHUB_OPS_KEEP_*``:
daily 7, weekly 4, monthly 6). ``--min-keep`` (our floor, default 3) applies either way
(:func:`charhub_ops.retention.options.choose_policy`). Bad input is one red line and exit code 1.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from charhub_ops.cli.app import JsonOpt, print_json, run_guarded
from charhub_ops.errors import PolicyError
from charhub_ops.retention.options import SETTINGS_FIELDS, PolicyChoice, describe_policy
from charhub_ops.retention.policy import RetentionPlan, plan_from_records, plan_to_json

__all__ = ["app", "retention_plan", "policy_options", "choose", "policy_line", "KeepLastOpt", "KeepHourlyOpt",
           "KeepDailyOpt", "KeepWeeklyOpt", "KeepMonthlyOpt", "KeepYearlyOpt", "KeepWithinOpt", "MinKeepOpt"]

app = typer.Typer(help="Retention policy tools (no repository needed).", no_args_is_help=True)

_RULE = " Any --keep-* given replaces the settings' whole policy."
KeepLastOpt = Annotated[int | None, typer.Option(help="Keep the newest N backups (-1 = all, 0 = off)." + _RULE)]
KeepHourlyOpt = Annotated[int | None, typer.Option(help="Keep the newest backup of each of N hours.")]
KeepDailyOpt = Annotated[int | None, typer.Option(help="Keep the newest backup of each of N days "
                                                       "(settings: 7).")]
KeepWeeklyOpt = Annotated[int | None, typer.Option(help="Keep the newest backup of each of N ISO weeks "
                                                        "(settings: 4).")]
KeepMonthlyOpt = Annotated[int | None, typer.Option(help="Keep the newest backup of each of N months "
                                                         "(settings: 6).")]
KeepYearlyOpt = Annotated[int | None, typer.Option(help="Keep the newest backup of each of N years.")]
KeepWithinOpt = Annotated[str | None, typer.Option(help="Keep every backup within D of the newest "
                                                        "(7d, 2w, 1y6m, 36h).")]
MinKeepOpt = Annotated[int | None, typer.Option(help="Never keep fewer complete backups than N "
                                                     "(default: settings, 3), whichever rules apply.")]


def policy_options(params: dict[str, Any]) -> dict[str, Any]:
    """The policy options among a command's parameters (``locals()`` at its start)."""
    return {name: params[name] for name in SETTINGS_FIELDS}


def choose(options: dict[str, Any]) -> PolicyChoice:
    """The policy that applies: the options given, else the settings (PolicyError/ConfigError when bad)."""
    from charhub_ops.settings import load_group

    return load_group("retention").policy(**options)


def policy_line(choice: PolicyChoice) -> str:
    where = "the --keep-* options given" if choice.source == "options" else "settings, no --keep-* option given"
    return f"policy ({where}): {describe_policy(choice.policy)}"


def _read_records(text: str) -> list[dict]:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"stdin: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                          'expected [{"id": "...", "time": "ISO-8601"}, ...]') from None


@app.command("plan")
def retention_plan(
    keep_last: KeepLastOpt = None, keep_hourly: KeepHourlyOpt = None, keep_daily: KeepDailyOpt = None,
    keep_weekly: KeepWeeklyOpt = None, keep_monthly: KeepMonthlyOpt = None, keep_yearly: KeepYearlyOpt = None,
    keep_within: KeepWithinOpt = None, min_keep: MinKeepOpt = None, as_json: JsonOpt = False,
) -> None:
    """Preview a policy on backups read from stdin: [{"id": "...", "time": "ISO-8601"}, ...]."""
    options = policy_options(locals())
    choice = run_guarded(lambda: choose(options))
    plan: RetentionPlan = run_guarded(lambda: plan_from_records(_read_records(sys.stdin.read()), choice.policy))
    if as_json:
        print_json({"policy": choice.policy.model_dump(mode="json", exclude_none=True), **plan_to_json(plan)})
        return
    rows = [(k.time, k.id, "keep", ", ".join(k.reasons)) for k in plan.keep]
    rows += [(c.time, c.id, "remove", "") for c in plan.remove]
    table = Table("backup id", "time (UTC)", "action", "reasons")
    for time, backup_id, action, reasons in sorted(rows, key=lambda r: r[0], reverse=True):
        table.add_row(backup_id, time.isoformat().replace("+00:00", "Z"), action, reasons)
    out = Console()
    out.print(policy_line(choice), highlight=False, soft_wrap=True)
    out.print(table)
