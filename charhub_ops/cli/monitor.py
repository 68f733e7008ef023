"""``charhub-ops monitor run``: the long-running monitor in this process (a systemd unit or a compose service;
deploy/charhub-ops-monitor.service, deploy/compose.monitor.yaml).

The same loop as the ``monitor`` deployment's hourly window (charhub_ops.monitoring.loop, through
flows.monitor.run_monitor) without any flow run: each check probed on its own ``interval``; events, the
heartbeat and the latest-pass artifact go to the Prefect server in PREFECT_API_URL, which is required (an
ephemeral API would drop every event). SIGTERM or Ctrl-C stops it after saving every check's state.
"""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from charhub_ops.cli.app import err, fail, prepare_prefect, run_guarded
from charhub_ops.cli.health import ConfigOpt, StateOpt, open_store, prefect_server

__all__ = ["app", "run"]

app = typer.Typer(help="The long-running monitor (probes in-process; see docs/pipelines/monitoring.md).",
                  no_args_is_help=True)
ForOpt = Annotated[str | None, typer.Option(
    "--for", help="Stop after this long (30s, 5m, 1h or seconds); default: until SIGTERM or Ctrl-C.")]


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt


@app.command("run")
def run(config: ConfigOpt = None, state: StateOpt = None, duration: ForOpt = None) -> None:
    """Probe every check on its own interval until stopped; events, heartbeat and the artifact
    charhub-ops-monitor go to the Prefect server (PREFECT_API_URL)."""
    from charhub_ops.monitoring.config import load_config
    from charhub_ops.monitoring.schedule import parse_interval
    from charhub_ops.settings import load_settings

    try:
        seconds = parse_interval(duration) if duration is not None else None
    except ValueError as exc:
        fail(f"--for: {exc}")
    if not prefect_server():
        fail("monitor run: no Prefect server is configured (PREFECT_API_URL, in the environment or the active "
             "Prefect profile): the events and the heartbeat would go nowhere")
    prepare_prefect()
    settings = run_guarded(load_settings)
    cfg = run_guarded(lambda: load_config(config or settings.monitor.config))
    store = run_guarded(lambda: open_store(state, shared=False, settings=settings))
    from flows.monitor import run_monitor

    signal.signal(signal.SIGTERM, _stop)
    err.print(f"monitoring {len(cfg.checks)} checks (Ctrl-C or SIGTERM stops)", highlight=False)
    try:
        run_guarded(lambda: _quiet(run_monitor, cfg, store, settings, seconds))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    err.print("stopped; every check's state saved", highlight=False)


def _quiet(func, *args):
    """A stop (SIGTERM, Ctrl-C) is the normal end of this command: the loop has flushed the states."""
    try:
        return func(*args)
    except KeyboardInterrupt:
        return None
