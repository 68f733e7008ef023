"""`charhub-ops setup | serve | status`: bootstrap the Prefect server in PREFECT_API_URL, serve every deployment
without a worker, and show the last run of each; setup and status also say who can reach the API (an open API
on a non-loopback address is a warning naming PREFECT_SERVER_API_AUTH_STRING) and what the server's own db_vacuum
deletes (a warning when it never deletes flow runs). Prefect is imported only inside the commands."""

from __future__ import annotations

import typer

from charhub_ops.cli.app import JsonOpt, err, fail, prepare_prefect, print_json, run_guarded

__all__ = ["setup", "serve", "status"]


def setup(as_json: JsonOpt = False) -> None:
    """Idempotent bootstrap: work pool, the blocks named in settings that are missing (values from the
    environment only; never overwritten), automations (notification block of CHARHUB_OPS_NOTIFY_BLOCK) and every
    deployment of prefect.yaml. Missing secrets are warnings naming how to create them. First the API is asked
    once without credentials (charhub_ops.access): open on a non-loopback address is a warning."""
    from charhub_ops.settings import load_settings

    settings = run_guarded(load_settings)
    _require_server()
    prepare_prefect()
    from charhub_ops.cleanup.prefect_vacuum import ServerRetention, describe
    from deployments.blocks import wanted_blocks
    from deployments.serve import load_spec
    from deployments.setup import secret_blocks
    from deployments.setup import setup as bootstrap

    blocks = wanted_blocks(settings, secret_blocks(load_spec()))
    access, warnings = _access()
    result = run_guarded(lambda: bootstrap(settings.runs.notify_block, blocks))
    result["access"], result["warnings"] = access.as_dict(), warnings + result["warnings"]
    if as_json:
        print_json(result)
        return
    err.print(f"work pool [bold]{result['work_pool']}[/]; {len(result['deployments'])} deployments registered",
              highlight=False)
    err.print(f"access: {_describe(access)}", highlight=False, soft_wrap=True)
    for slug, outcome in result["blocks"].items():
        err.print(f"  block {slug}: {outcome}", highlight=False)
    for name, outcome in result["automations"].items():
        err.print(f"  automation {name}: {outcome}", highlight=False)
    for line in describe(ServerRetention.model_validate(result["retention"])):
        err.print(line, highlight=False)
    for warning in result["warnings"]:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def serve() -> None:
    """Serve every deployment of prefect.yaml from this process (no work pool or worker needed)."""
    _require_server()
    prepare_prefect()
    from deployments.serve import main

    run_guarded(main)


def status(as_json: JsonOpt = False) -> None:
    """The last run of each deployment: state, start, duration and the next scheduled run; the access warning
    of ``setup`` and, when the server never deletes flow runs, one retention warning on stderr."""
    _require_server()
    prepare_prefect()
    from charhub_ops.cleanup.prefect_vacuum import retention_warning
    from deployments.setup import server_retention
    from deployments.setup import status as read_status

    for warning in _access()[1] + [w for w in [retention_warning(run_guarded(server_retention))] if w]:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    rows = run_guarded(read_status)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        duration = "" if r["duration_s"] is None else f"{r['duration_s']:.1f} s"
        typer.echo(f"{r['deployment']:<22} {r['last_state'] or '-':<15} {r['last_start'] or '-':<33} "
                   f"{duration:<10} next {r['next_run'] or '-'}")


def _access():
    """Ask the API once without credentials (charhub_ops.access); (Access, warning lines). A server that
    requires credentials this CLI does not have is one clear error line, not a 401 traceback."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    from charhub_ops.access import access_warnings, check_access, credentials_accepted

    access, auth = check_access(PREFECT_API_URL.value()), PREFECT_API_AUTH_STRING.value()
    if access.open is False and not auth:
        fail(f"the Prefect API at {access.api} requires credentials ({access.detail}): set PREFECT_API_AUTH_STRING "
             "(user:password, as the server's PREFECT_SERVER_API_AUTH_STRING)")
    if access.open is False and credentials_accepted(access.api, auth) is False:
        fail(f"the Prefect API at {access.api} refused PREFECT_API_AUTH_STRING: set it to the server's "
             "PREFECT_SERVER_API_AUTH_STRING (user:password)")
    return access, access_warnings(access, auth is not None)


def _describe(access) -> str:
    if access.open is None:
        return f"{access.api}: could not tell ({access.detail})"
    guard = "answers without credentials" if access.open else "requires credentials"
    return f"{access.api} {guard} ({'loopback' if access.loopback else 'not loopback'})"


def _require_server() -> None:
    from charhub_ops.cli.health import prefect_server

    if not prefect_server():
        fail("no Prefect server: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
