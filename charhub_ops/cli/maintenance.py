"""`charhub-ops maintenance start | stop | list`: ad hoc maintenance windows (kept in the state store, so every
monitor run sees them). Inside a window, down events and incidents are suppressed; reports list the windows."""

from __future__ import annotations

import getpass
import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer

from charhub_ops.cli.app import JsonOpt, err, print_json, run_guarded
from charhub_ops.cli.health import StateOpt, open_store
from charhub_ops.errors import ConfigError

__all__ = ["app"]

app = typer.Typer(help="Maintenance windows: suppress alerts and incidents during planned work.",
                  no_args_is_help=True)


@app.command()
def start(
    check: Annotated[list[str] | None, typer.Option(
        "--check", help="Check id; repeatable (none = every check).")] = None,
    for_: Annotated[str, typer.Option("--for", help="Duration: 30m, 2h, 1h30m.")] = "30m",
    reason: Annotated[str, typer.Option("--reason", help="Shown in reports.")] = "maintenance",
    state: StateOpt = None, as_json: JsonOpt = False,
) -> None:
    """Open a window now for the given checks."""
    from charhub_ops.monitoring.windows import AdHocWindow, parse_duration

    def run() -> AdHocWindow:
        try:
            length = parse_duration(for_)
        except ValueError as exc:
            raise ConfigError(f"--for: {exc}") from None
        now = datetime.now(UTC)
        window = AdHocWindow(id=f"w-{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:4]}", checks=check or [], start=now,
                             end=now + length, reason=reason, by=getpass.getuser())
        open_store(state).save_window(window)
        return window

    w = run_guarded(run)
    if as_json:
        print_json(w.model_dump(mode="json"))
    else:
        err.print(f"[green]✓[/] window {w.id} for {', '.join(w.checks) or 'every check'} until "
                  f"{w.end:%Y-%m-%d %H:%M} UTC", highlight=False)


@app.command()
def stop(
    window_id: Annotated[str | None, typer.Argument(help="The window id (see `maintenance list`).")] = None,
    check: Annotated[str | None, typer.Option("--check", help="Close every window covering this check.")] = None,
    state: StateOpt = None,
) -> None:
    """Close a window (by id, or all windows naming --check)."""
    def run() -> list[str]:
        store = open_store(state)
        if (window_id is None) == (check is None):
            raise ConfigError("stop: give a window id or --check ID")
        ids = [w.id for w in store.windows() if w.id == window_id or (check and check in w.checks)]
        if not ids:
            raise ConfigError(f"stop: no window {window_id or 'for ' + str(check)}")
        for i in ids:
            store.delete_window(i)
        return ids

    err.print(f"[green]✓[/] closed {', '.join(run_guarded(run))}", highlight=False)


@app.command("list")
def list_(state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Ad hoc windows, current and future first (recurring ones are in the config)."""
    now = datetime.now(UTC)
    windows = sorted(run_guarded(lambda: open_store(state).windows()), key=lambda w: w.start, reverse=True)
    if as_json:
        print_json([{**w.model_dump(mode="json"), "active": w.start <= now < w.end} for w in windows])
        return
    for w in windows:
        flag = "[yellow]active[/]" if w.start <= now < w.end else ("ended" if w.end <= now else "planned")
        err.print(f"{w.id} {flag} {', '.join(w.checks) or 'every check'} {w.start:%Y-%m-%d %H:%M}–"
                  f"{w.end:%H:%M} UTC {w.reason} ({w.by})", highlight=False)
    if not windows:
        err.print("no maintenance windows", highlight=False)
