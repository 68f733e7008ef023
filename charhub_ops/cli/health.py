"""`charhub-ops health`: one pass of every check (the ``monitor`` flow), streaks kept between invocations.

State store (charhub_ops.monitoring.store.resolve_state): Prefect Variables when a Prefect server is configured,
else — for these streaks only — the repository (setting ``monitor_state``; see docs/pipelines/monitoring.md,
"Where the state lives").
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Annotated

import typer

from charhub_ops.cli.app import JsonOpt, err, prepare_prefect, print_json, run_guarded

__all__ = ["health", "prefect_server", "open_store", "ConfigOpt", "StateOpt"]

ConfigOpt = Annotated[str | None, typer.Option(
    "--config", help="The monitor YAML (default: CHARHUB_OPS_MONITOR_CONFIG).")]
StateOpt = Annotated[str | None, typer.Option(
    "--state", help="State store: auto, prefect, repository, file:///dir or s3://bucket/prefix "
                    "(default: CHARHUB_OPS_MONITOR_STATE).")]
_MARK = {"up": "[green]up[/]", "down": "[bold red]DOWN[/]", "maintenance": "[yellow]maintenance[/]"}


def prefect_server() -> bool:
    """A Prefect server is configured: Prefect's own PREFECT_API_URL once Prefect is loaded in this process,
    else the environment or the active profile (charhub_ops.monitoring.store.prefect_server_configured, which
    avoids loading Prefect): every command decides the state store the same way."""
    if "prefect.settings" in sys.modules:
        from prefect.settings import PREFECT_API_URL

        return bool(PREFECT_API_URL.value())
    from charhub_ops.monitoring.store import prefect_server_configured

    return prefect_server_configured()


def open_store(state: str | None, shared: bool = True, settings=None):
    """The state store by the one rule of charhub_ops.monitoring.store.open_state (``shared``: what the workers
    must see — ``auto`` without a Prefect server fails with one line). Prefect is loaded only when the store
    is Prefect Variables, at its first request."""
    from charhub_ops.monitoring.store import open_state
    from charhub_ops.settings import load_settings

    return open_state(settings or load_settings(), state, prefect_server(), _variables_client, shared)


@cache
def _prepared() -> None:
    prepare_prefect()


def _variables_client():
    """Prefect's client for the store's Variables, with this CLI's Prefect settings (applied once)."""
    _prepared()
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _pass_without_prefect(config: str | None, state: str | None) -> list[dict] | None:
    """Without a Prefect server (no PREFECT_API_URL) the pass runs in core against the repository store:
    no flow run, no events (an ephemeral API would drop them), ~1 s instead of ~10 s. None: use the flow."""
    from datetime import UTC, datetime

    from charhub_ops.monitoring.config import load_config
    from charhub_ops.monitoring.runner import run_pass
    from charhub_ops.monitoring.store import repository_state
    from charhub_ops.settings import load_settings

    settings = load_settings()
    cfg = load_config(config or settings.monitor.config)
    if any(getattr(c, "bearer_secret", None) for c in cfg.checks):
        return None  # a Prefect Secret block is needed
    store = repository_state(settings, state, prefect_server())
    return run_pass(cfg, store, settings, datetime.now(UTC)) if store is not None else None


def health(config: ConfigOpt = None, state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Probe every check once; prints id, ok, detail, streak (consecutive failures) and state
    (up | down | maintenance). Exit code 1 when a check is down."""
    rows = run_guarded(lambda: _pass_without_prefect(config, state))
    if rows is None:  # the state lives in Prefect Variables: run the monitor flow (events go to the server)
        prepare_prefect()
        from flows.monitor import monitor_flow

        rows = run_guarded(lambda: monitor_flow(config=config, state=state))
    out = [{"id": r["id"], "ok": r["ok"], "detail": r["detail"], "streak": r["streak"], "state": r["state"]}
           for r in rows]
    if as_json:
        print_json(out)
    else:
        for r in out:
            mark = "[green]✓[/]" if r["ok"] else "[red]✗[/]"
            err.print(f"{mark} {r['id']:<20} {_MARK[r['state']]:<10} streak {r['streak']}  {r['detail']}",
                      highlight=False, soft_wrap=True)
    if any(r["state"] == "down" for r in out):
        raise typer.Exit(1)
