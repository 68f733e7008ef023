"""Monitor: one pass over every check — probe → update the state → emit events once per transition.

Runbook: load the config and the state (Prefect Variables, see tasks.monitor) → probe every check
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

from typing import Annotated

from prefect import flow
from pydantic import Field

from charhub_ops.monitoring.config import load_config
from charhub_ops.monitoring.runner import EVENTS, evaluate
from charhub_ops.monitoring.windows import active_windows
from flows.params import CONFIG_HELP, STATE_HELP, StateStore, described
from tasks.common import run_settings
from tasks.monitor import check_context, open_state, probe, utcnow
from tasks.notify import emit_many, notify

__all__ = ["monitor_flow"]


@flow(name="monitor")
@described
def monitor_flow(
    config: Annotated[str | None, Field(description=CONFIG_HELP)] = None,
    state: Annotated[StateStore | None, Field(description=STATE_HELP)] = None,
) -> list[dict]:
    """One pass of all checks (``config``: the YAML file, default setting monitor_config; ``state``: the
    state store, default setting monitor_state)."""
    settings = run_settings()
    cfg = load_config(config or settings.monitor.config)
    store = open_state(settings, state, shared=False)  # without a server: health's own streaks
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
