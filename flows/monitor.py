"""Monitor: one pass over every check — probe → update the state → emit events once per transition.

Runbook: load the config and the state (Prefect Variables, see tasks.monitoring) → probe every check
(concurrently, one task each) → apply the pure state machine (streak, down once at ``threshold``, recovered
once after ``recovery_threshold``, reminders, maintenance windows) → save → events:

* ``charhub.check.failed`` for each failed probe;
* ``charhub.service.down`` / ``charhub.service.recovered`` once per transition — the ``incident-respond`` and
  ``incident-resolve`` deployments are triggered by them;
* ``charhub.service.reminder`` while down, no more often than ``remind_every`` (also notified);
* ``charhub.disk.high`` when a disk passes a higher level than at the previous probe (the first is 70 %).

Each event's resource is ``charhub.check.<id>``; the payload carries ``check_id``, ``severity``, ``detail``.
Returns one row per check: ``id``, ``ok``, ``detail``, ``streak`` (consecutive failures), ``state``
(``up`` | ``down`` | ``maintenance``), ``events``.
"""

from __future__ import annotations

from prefect import flow

from charhub_ops.monitoring.config import load_config
from charhub_ops.monitoring.state import CheckState, step
from charhub_ops.monitoring.windows import active_windows
from charhub_ops.settings import load_settings
from tasks.monitoring import check_context, open_state, probe, utcnow
from tasks.notify import emit, notify

__all__ = ["monitor_flow", "EVENTS"]

EVENTS = {"failed": "charhub.check.failed", "down": "charhub.service.down", "recovered": "charhub.service.recovered",
          "reminder": "charhub.service.reminder"}


@flow(name="monitor", log_prints=False)
def monitor_flow(config: str | None = None, state: str | None = None) -> list[dict]:
    """One pass of all checks (``config``: the YAML file, default setting monitor_config; ``state``: the
    state store, default setting monitor_state)."""
    settings = load_settings()
    cfg = load_config(config or settings.monitor_config)
    store = open_state(settings, state)
    windows, now = store.windows(), utcnow()
    states = {c.id: store.check(c.id) for c in cfg.checks}
    contexts = {c.id: check_context(c, settings, states[c.id], now) for c in cfg.checks}
    futures = {c.id: probe.submit(c, contexts[c.id]) for c in cfg.checks}
    rows = []
    for check in cfg.checks:
        in_window = active_windows(check.id, now, cfg.maintenance, windows)
        rows.append(_apply(check, futures[check.id].result(), states[check.id], in_window, store, cfg, now,
                           contexts[check.id].secrets))
    return rows


def _apply(check, result, previous: CheckState, in_window: list[str], store, cfg, now, secrets) -> dict:
    moved = step(previous, result.ok, result.detail, now, threshold=check.threshold,
                 recovery_threshold=check.recovery_threshold, remind_every=check.remind_every,
                 maintenance=bool(in_window), latency_ms=result.latency_ms,
                 latency_window=getattr(check, "latency_window", 20))
    new = moved.state
    new.restart_count = result.facts.get("restart_count", new.restart_count)
    events = list(moved.events)
    if check.type == "disk" and result.level > previous.level and result.level >= 1:
        events.append("disk_high")
    new.level = result.level
    store.save_check(new)
    payload = {"check_id": check.id, "severity": check.severity, "detail": result.detail, "type": check.type,
               "streak": new.fail_streak, "status": new.status}
    for event in events:
        _emit(check, event, payload, result, in_window, cfg, secrets)
    return {"id": check.id, "ok": result.ok, "detail": result.detail, "streak": new.fail_streak,
            "state": "maintenance" if in_window else new.status, "events": events, "maintenance": in_window}


def _emit(check, event: str, payload: dict, result, in_window: list[str], cfg, secrets) -> None:
    resource = f"charhub.check.{check.id}"
    if event == "disk_high":
        emit("charhub.disk.high", resource, {**payload, "level": result.level, **result.facts})
    elif event == "suppressed":
        emit("charhub.service.suppressed", resource, {**payload, "maintenance": in_window})
    else:
        emit(EVENTS[event], resource, payload)
    if event == "reminder":
        notify(cfg.notify_block, f"charhub-ops: {check.id} still down", f"{check.id}: {result.detail}", secrets)
