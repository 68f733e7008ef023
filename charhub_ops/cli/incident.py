"""`charhub-ops incident respond | resolve | list | show`: the incident flow by hand, closing an incident by
hand, and the incidents kept in the state store (open and closed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charhub_ops.cli.app import JsonOpt, err, prepare_prefect, print_json, run_guarded
from charhub_ops.cli.health import ConfigOpt, StateOpt, open_store, prefect_server
from charhub_ops.errors import ConfigError

__all__ = ["app"]

app = typer.Typer(help="Incidents: respond to a check that is down, resolve, list and show them.",
                  no_args_is_help=True)


@app.command()
def respond(
    check: Annotated[str, typer.Option("--check", help="The check id (as in the config).")],
    config: ConfigOpt = None, state: StateOpt = None, as_json: JsonOpt = False,
) -> None:
    """Run the incident-response flow for a check (what the charhub.service.down trigger runs)."""
    from charhub_ops.monitoring.config import load_config
    from charhub_ops.monitoring.store import resolve_state
    from charhub_ops.settings import load_settings
    from flows.params import StateStore, check_value

    run_guarded(lambda: (check_value("--state", StateStore | None, state),
                         load_config(config or load_settings().monitor.config).check(check),
                         resolve_state(load_settings(), state, prefect_server())))  # one line before any flow
    prepare_prefect()
    from flows.incident import incident_respond_flow

    r = run_guarded(lambda: incident_respond_flow(check_id=check, config=config, state=state))
    if as_json:
        print_json({"incident_id": r["incident_id"], "status": r["status"], "resolved": r["resolved"],
                    "actions": [{"action": a["action"], "ok": a["ok"], "ran": a["ran"]} for a in r["actions"]],
                    "report": r["report"], "maintenance": r["maintenance"], "healthy": r.get("healthy")})
        return
    if r.get("healthy") is not None:
        opened = f"; incident {r['incident_id']} stays {r['status']}" if r["incident_id"] else ""
        err.print(f"{check}: passes now, nothing opened ({r['healthy']}){opened}", highlight=False)
        return
    if r["incident_id"] is None:
        err.print(f"{check}: in a maintenance window, no incident: {'; '.join(r['maintenance'])}", highlight=False)
        return
    err.print(f"[bold]{r['incident_id']}[/]: {r['status']}  report {r['report']}", highlight=False)
    for a in r["actions"]:
        mark = "[green]✓[/]" if a["ok"] else ("[red]✗[/]" if a["ran"] else "·")
        err.print(f"  {mark} {a['action']}: {a['detail']}", highlight=False, soft_wrap=True)


@app.command("list")
def list_(config: ConfigOpt = None, state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Open and closed incidents, newest first."""
    incidents = run_guarded(lambda: open_store(state).incidents())
    rows = [{"incident_id": i.id, "check_id": i.check_id, "severity": i.severity, "status": i.status,
             "opened_at": i.opened_at, "resolved_at": i.resolved_at, "report": i.report} for i in incidents]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        err.print(f"{r['opened_at']:%Y-%m-%d %H:%M} {r['incident_id']:<40} {r['severity']:<8} {r['status']}",
                  highlight=False)
    if not rows:
        err.print("no incidents", highlight=False)


@app.command()
def show(incident_id: Annotated[str, typer.Argument(help="The incident id (see `incident list`).")],
         state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """One incident: its record, and its report when the file is here."""
    def run():
        inc = open_store(state).incident(incident_id)
        if inc is None:
            raise ConfigError(f"incident {incident_id}: not found")
        return inc

    inc = run_guarded(run)
    if as_json:
        print_json(inc.model_dump(mode="json"))
    elif inc.report and Path(inc.report).exists():
        typer.echo(Path(inc.report).read_text())
    else:
        print_json(inc.model_dump(mode="json"))


@app.command()
def resolve(
    incident_id: Annotated[str, typer.Argument(help="The incident id (see `incident list`).")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is closed (in the timeline).")] = "closed by hand",
    state: StateOpt = None, as_json: JsonOpt = False,
) -> None:
    """Close an open incident by hand: its check's slot frees (the next outage opens a new incident) and its
    report file, when here, is rewritten."""
    import getpass
    from datetime import UTC, datetime

    from charhub_ops.monitoring.report import resolve_by_hand

    inc = run_guarded(lambda: resolve_by_hand(open_store(state), incident_id, datetime.now(UTC),
                                              getpass.getuser(), reason))
    if as_json:
        print_json({"incident_id": inc.id, "status": inc.status, "resolved_at": inc.resolved_at,
                    "report": inc.report})
    else:
        err.print(f"[green]✓[/] {inc.id} resolved at {inc.resolved_at:%Y-%m-%d %H:%M:%S} UTC", highlight=False)
