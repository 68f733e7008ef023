"""Monitor: probe every check → update the state → emit events once per transition.

Two modes (docs/pipelines/monitoring.md, "Always-on cost"):

* ``window_seconds: 0`` (the default, a run from the UI, ``charhub-ops health``): **one pass**, as below;
* ``window_seconds: N`` (the ``monitor`` deployment: 3540 s, started every hour): **a window** of N seconds
  in which :func:`run_monitor` probes each check in-process on its own ``interval`` — plain function calls,
  no task run per probe — saves a check's state only when it changed, emits only the events below plus a
  ``charhub.monitor.heartbeat`` every ``heartbeat_every``, and keeps the artifact ``charhub-ops-monitor``
  (every check's state, streak, latency and last failure) updated in place
  (charhub_ops.monitoring.loop). ``charhub-ops monitor run`` runs the same loop without a flow run.

One pass: load the config and the state (Prefect Variables, see tasks.monitor) → probe every check
(concurrently, one task each) → apply the pure state machine (streak, down once at ``threshold``, recovered
once after ``recovery_threshold``, reminders, maintenance windows) → save → events:

* ``charhub.check.failed`` for each failed probe;
* ``charhub.service.down`` / ``charhub.service.recovered`` once per transition — the ``incident-respond`` and
  ``incident-resolve`` deployments are triggered by them;
* ``charhub.service.reminder`` while down, no more often than ``remind_every`` (also notified);
  ``charhub.service.suppressed`` when a streak reaches the threshold inside a maintenance window;
* ``charhub.disk.high`` when a disk passes a higher level than at the previous probe (the first is 70 %).

Each event's resource is ``charhub.check.<id>``; the payload carries ``check_id``, ``severity``, ``detail``.
Returns one row per check: ``id``, ``ok``, ``detail``, ``streak`` (consecutive failures), ``state``
(``up`` | ``down`` | ``maintenance``), ``events``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from charhub_ops.monitoring.config import MonitorConfig, load_config
from charhub_ops.monitoring.loop import Monitor
from charhub_ops.monitoring.runner import EVENTS, evaluate
from charhub_ops.monitoring.store import MonitorState
from charhub_ops.monitoring.windows import active_windows
from charhub_ops.settings import Settings
from flows.params import CONFIG_HELP, STATE_HELP, StateStore, described
from tasks.common import run_settings
from tasks.monitor import check_context, open_state, prefect_sinks, probe, utcnow
from tasks.notify import emit_many, notify

__all__ = ["monitor_flow", "run_monitor"]

WINDOW_HELP = ("0 = one pass of every check (as a run from the UI); N = keep probing, each check on its own "
               "interval, for N seconds (the deployment: 3540, started every hour)")


@flow(name="monitor")
@described
def monitor_flow(
    config: Annotated[str | None, Field(description=CONFIG_HELP)] = None,
    state: Annotated[StateStore | None, Field(description=STATE_HELP)] = None,
    window_seconds: Annotated[int, Field(ge=0, le=86400, description=WINDOW_HELP)] = 0,
) -> list[dict]:
    """One pass of all checks, or a window of ``window_seconds`` (``config``: the YAML file, default setting
    monitor_config; ``state``: the state store, default setting monitor_state)."""
    settings = run_settings()
    cfg = load_config(config or settings.monitor.config)
    store = open_state(settings, state, shared=False)  # without a server: health's own streaks
    if window_seconds:
        get_run_logger().info("probing %d checks for %d s", len(cfg.checks), window_seconds)
        return run_monitor(cfg, store, settings, window_seconds, source="monitor flow")
    windows, now = store.windows(), utcnow()
    states = {c.id: store.check(c.id) for c in cfg.checks}
    contexts = {c.id: check_context(c, settings, states[c.id], now) for c in cfg.checks}
    futures = {c.id: probe.submit(c, contexts[c.id]) for c in cfg.checks}
    rows, events = [], []
    for check in cfg.checks:
        result = futures[check.id].result()
        out = evaluate(check, result, states[check.id], active_windows(check.id, now, cfg.maintenance, windows), now)
        store.save_check(out.state)
        events += [(EVENTS[e], f"charhub.check.{check.id}", out.payload) for e in out.events]
        if "reminder" in out.events:
            notify(cfg.notify_block, f"charhub-ops: {check.id} still down", f"{check.id}: {result.detail}",
                   contexts[check.id].secrets)
        rows.append(out.row)
    if events:
        emit_many(events)
    return rows


def run_monitor(cfg: MonitorConfig, store: MonitorState, settings: Settings, seconds: float | None,
                source: str = "charhub-ops monitor run") -> list[dict]:
    """Probe for ``seconds`` (None: until stopped) with plain function calls — no flow or task run of its
    own; the latest row of every check probed."""
    monitor = Monitor(cfg, store, prefect_sinks(cfg, settings), source)
    until = None if seconds is None else utcnow() + timedelta(seconds=seconds)
    monitor.run(utcnow, time.sleep, until)
    return [{k: v for k, v in row.items() if k not in ("at", "last_failure", "latency_ms")}
            for row in monitor.rows.values()]
