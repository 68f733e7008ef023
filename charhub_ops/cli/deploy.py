"""`charhub-ops deploy pre | post` and `charhub-ops rollback`: the deploy guard around CharHub's deploy.

Each checks its input (the services' checks in the monitor config) before Prefect starts, then runs its flow.
A failed health gate prints the verdict (with ``--json``) and one error line, exit code 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from charhub_ops.cli.app import JsonOpt, err, fail, prepare_prefect, print_json, run_guarded, run_verdict
from charhub_ops.cli.health import ConfigOpt, StateOpt

__all__ = ["app", "rollback"]

app = typer.Typer(help="Deploy guard: record and back up before a deploy, health gate after it.",
                  no_args_is_help=True)

ServiceOpt = Annotated[list[str], typer.Option(
    "--service", help="Service container name (as in the monitor config's `container:`); repeatable.")]


def _check(services: list[str], config: str | None, state: str | None) -> None:
    from charhub_ops.cli.health import prefect_server
    from charhub_ops.deploy.gate import service_checks
    from charhub_ops.monitoring.config import load_config
    from charhub_ops.monitoring.store import resolve_state
    from charhub_ops.settings import load_settings

    settings = load_settings()
    service_checks(load_config(config or settings.monitor.config), services)
    resolve_state(settings, state, prefect_server())  # the store the workers read windows from, or one line


def _run(services: list[str], config: str | None, as_json: bool, call: Callable[[], dict],
         state: str | None = None) -> dict | None:
    """Check, run ``call`` (the flow); with ``as_json`` print its result (or a failed gate's verdict) and return
    None, else return the result for the caller's lines."""
    run_guarded(lambda: _check(services, config, state))
    prepare_prefect()

    result = run_verdict(call, as_json)
    if as_json:
        print_json(result)
        return None
    return result


@app.command()
def pre(
    service: ServiceOpt,
    release: Annotated[str | None, typer.Option(
        "--release", help="The tag or git sha being deployed (backup label pre-deploy-<release>).")] = None,
    backup: Annotated[bool, typer.Option(help="Take the pre-deploy backup (DATABASE_URL).")] = True,
    config: ConfigOpt = None, state: StateOpt = None, as_json: JsonOpt = False,
) -> None:
    """Before a deploy: record each service's running release, back up, open a maintenance window."""
    def call() -> dict:
        from flows.deploy import pre_deploy_flow

        return pre_deploy_flow(services=service, release=release, backup=backup, config=config, state=state)

    if (r := _run(service, config, as_json, call, state)) is None:
        return
    err.print(f"[green]✓[/] {r['label']}: backup {r['backup_id'] or 'skipped'}, window {r['window_id']} until "
              f"{r['window_end'][:19]} UTC", highlight=False)
    for s in r["services"]:
        err.print(f"  {s['service']}: {s['tag']} {s['image_id'][:19]} {'(last-good)' if s['last_good'] else ''}",
                  highlight=False)


@app.command()
def post(service: ServiceOpt, config: ConfigOpt = None, state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """After a deploy: the health gate (every check passes N times in a row); passed: last-good, window closed."""
    def call() -> dict:
        from flows.deploy import post_deploy_flow

        return post_deploy_flow(services=service, config=config, state=state)

    if (r := _run(service, config, as_json, call, state)) is not None:
        err.print(f"[green]✓[/] health gate passed in {r['gate_seconds']} s ({r['rounds']} rounds): "
                  f"{', '.join(s['service'] for s in r['services'])} recorded as last-good", highlight=False)


def rollback(
    service: ServiceOpt,
    restore_data: Annotated[bool, typer.Option(
        "--restore-data", help="Also restore the pre-deploy backup over the live database (needs --yes).")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --restore-data.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the incident report).")] = "manual rollback",
    config: ConfigOpt = None, state: StateOpt = None, as_json: JsonOpt = False,
) -> None:
    """Recreate each service from its last-good release (volumes untouched), then the health gate."""
    if restore_data and not yes:
        fail("--restore-data replaces the live database with the pre-deploy backup: confirm with --yes")

    def call() -> dict:
        from flows.deploy import rollback_flow

        return rollback_flow(services=service, restore_data=restore_data, reason=reason, config=config, state=state)

    if (r := _run(service, config, as_json, call, state)) is None:
        return
    if r.get("already_on_last_good"):
        err.print(f"[green]✓[/] {', '.join(service)} already on last-good and healthy: nothing changed",
                  highlight=False)
        return
    for s in r["services"]:
        err.print(f"[green]✓[/] {s['service']}: {(s['from_image'] or 'none')[:19]} → {s['to_image'][:19]} "
                  f"({s['tag']}), healthy", highlight=False)
    err.print(f"incident report: {r['report']}", highlight=False)
