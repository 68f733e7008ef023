"""A long-running monitor: each check probed in-process on its own ``interval``; the outside hears only news.

:class:`Monitor` keeps every check's state in memory between probes and applies the same pure state machine
as a one-pass run (:func:`charhub_ops.monitoring.runner.evaluate`), so the events are the same: ``failed`` per
failed probe, ``down`` / ``recovered`` once per transition, ``reminder``, ``suppressed``, ``disk_high``. What
it costs the Prefect server is kept to what must be said:

* **events**: only those of the state machine, plus ``charhub.monitor.heartbeat`` (resource
  ``charhub.monitor``) every ``heartbeat_every`` — a proactive automation alerts when it stops;
* **state**: a check's state is saved when something that matters changed (status, the streaks up to their
  thresholds, a transition time, the disk level, a container's restart count, the archiver's failure count, a
  new disk sample) — *before*
  its events are emitted, so an incident run triggered by ``down`` reads the probe that caused it. At the end
  (:meth:`Monitor.flush`) a stopped monitor saves every check; a window that ends (the hourly deployment) only
  those not saved for ``SAVE_EVERY`` (6 h): each save is a Variable write, and Prefect records every one as
  a ``prefect.variable.updated`` event. A passing check writes nothing in between; a crash loses at most
  the latencies and probe history since its last save, never a transition;
* **the latest pass** (every check: state, streak, latency, last failure) as markdown handed to
  ``publish`` when a check's state changed, else every ``publish_every``; maintenance windows re-read every
  30 s.

The outside is :class:`Sinks` (callables: emit, the probe context, publish, remind), so this module never
imports Prefect and the tests drive it with a fake clock. :meth:`Monitor.run` loops ticks until ``until``;
due checks of one tick are probed concurrently (a slow URL does not hold the others back).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from charhub_ops.monitoring.checks import CheckContext, CheckResult, run_check
from charhub_ops.monitoring.config import MonitorConfig
from charhub_ops.monitoring.runner import EVENTS, evaluate
from charhub_ops.monitoring.schedule import plan, wake_at
from charhub_ops.monitoring.state import CheckState
from charhub_ops.monitoring.store import MonitorState
from charhub_ops.monitoring.windows import active_windows

__all__ = ["HEARTBEAT_EVENT", "MONITOR_RESOURCE", "Sinks", "Monitor", "latest_markdown", "significant"]

HEARTBEAT_EVENT = "charhub.monitor.heartbeat"
MONITOR_RESOURCE = "charhub.monitor"
WINDOWS_EVERY = 30.0
SAVE_EVERY = 6 * 3600.0  # seconds: an unchanged check's latencies and probes are saved at least this often
_HEARTBEAT, _PUBLISH, _WINDOWS = ":heartbeat", ":publish", ":windows"  # not valid check ids: no clash


@dataclass
class Sinks:
    """What the monitor tells the outside (see the module docstring)."""

    emit: Callable[[str, str, dict], None]                          # (event, resource id, payload)
    context: Callable[[Any, CheckState, datetime], CheckContext]    # (check, state, now) → the probe's context
    publish: Callable[[str], None] | None = None                    # markdown of the latest pass
    remind: Callable[[Any, CheckResult, CheckContext], None] | None = None  # a reminder's notification


def significant(state: CheckState, check) -> tuple:
    """What of ``state`` must survive a crash: a change of it is saved at once (streaks only up to the
    thresholds, where they stop mattering)."""
    history = state.disk_history.times[-1] if state.disk_history.times else None
    return (state.status, min(state.fail_streak, check.threshold), min(state.pass_streak, check.recovery_threshold),
            state.first_failure_at, state.down_at, state.recovered_at, state.last_reminder_at, state.level,
            state.restart_count, state.archive_failed_count, history)


class Monitor:
    """Checks of ``cfg`` against ``store``, told to ``sinks``; call :meth:`tick` or :meth:`run`, then
    :meth:`flush`."""

    def __init__(self, cfg: MonitorConfig, store: MonitorState, sinks: Sinks, source: str = "monitor") -> None:
        self.cfg, self.store, self.sinks, self.source = cfg, store, sinks, source
        self.checks = {c.id: c for c in cfg.checks}
        self.states = {c.id: store.check(c.id) for c in cfg.checks}
        self.saved = {c.id: significant(self.states[c.id], c) for c in cfg.checks}
        self.saved_at = {c.id: self.states[c.id].probes[-1].at if self.states[c.id].probes else None
                         for c in cfg.checks}
        self.intervals = {_WINDOWS: WINDOWS_EVERY, **{c.id: c.interval for c in cfg.checks},
                          _HEARTBEAT: cfg.heartbeat_every, _PUBLISH: cfg.publish_every}
        self.next_at: dict[str, datetime] = {}
        self.rows: dict[str, dict] = {}
        self.failures = {c.id: _last_failure(self.states[c.id]) for c in cfg.checks}
        self.windows: list = []
        self.probes, self.started, self.changed = 0, None, True
        self._pool: ThreadPoolExecutor | None = None

    def tick(self, now: datetime) -> list[dict]:
        """Probe the checks due at ``now``; returns their rows (as the one-pass flow returns them)."""
        self.started = self.started or now
        due, self.next_at = plan(self.intervals, self.next_at, now)
        if _WINDOWS in due:
            self.windows = self.store.windows()
        checks = [self.checks[key] for key in due if key in self.checks]
        contexts = [self.sinks.context(c, self.states[c.id], now) for c in checks]
        results = self._probe(checks, contexts)
        rows = [self._apply(c, r, x, now) for c, x, r in zip(checks, contexts, results, strict=True)]
        if _HEARTBEAT in due:
            self.sinks.emit(HEARTBEAT_EVENT, MONITOR_RESOURCE, self._heartbeat(now))
        if self.sinks.publish and (self.changed or _PUBLISH in due):
            self.sinks.publish(latest_markdown(list(self.rows.values()), now))
            self.changed = False
        return rows

    def run(self, clock: Callable[[], datetime], sleep: Callable[[float], None],
            until: datetime | None = None) -> int:
        """Tick until the next due time would be at or after ``until`` (None: for ever); flushes at the end,
        also on an exception. Returns the number of ticks."""
        ticks, stopped = 0, True
        try:
            while True:
                self.tick(clock())
                ticks += 1
                wake = wake_at(self.next_at)
                if until is not None and wake >= until:
                    stopped = False
                    return ticks
                sleep(max(0.0, (wake - clock()).total_seconds()))
        finally:
            self.flush(clock(), everything=stopped)

    def flush(self, now: datetime, everything: bool = True) -> None:
        """Save the states probed since their last save — all of them (``everything``: a stop), else those
        whose last save is ``SAVE_EVERY`` old (the end of a window) — and stop the probe threads."""
        for check_id, state in self.states.items():
            last = self.saved_at[check_id]
            probed = bool(state.probes) and (last is None or state.probes[-1].at > last)
            if probed and (everything or last is None or (now - last).total_seconds() >= SAVE_EVERY):
                self._save(check_id, state, now)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _probe(self, checks: list, contexts: list[CheckContext]) -> list[CheckResult]:
        if len(checks) <= 1:
            return [run_check(c, x) for c, x in zip(checks, contexts, strict=True)]
        self._pool = self._pool or ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        return list(self._pool.map(run_check, checks, contexts))

    def _apply(self, check, result: CheckResult, ctx: CheckContext, now: datetime) -> dict:
        self.probes += 1
        in_window = active_windows(check.id, now, self.cfg.maintenance, self.windows)
        out = evaluate(check, result, self.states[check.id], in_window, now)
        self.states[check.id] = out.state
        key = significant(out.state, check)
        if key != self.saved[check.id]:
            self._save(check.id, out.state, now)  # before the events: an incident run reads this state
            self.changed = True
        for event in out.events:
            self.sinks.emit(EVENTS[event], f"charhub.check.{check.id}", out.payload)
        if "reminder" in out.events and self.sinks.remind:
            self.sinks.remind(check, result, ctx)
        if not result.ok:
            self.failures[check.id] = f"{now:%Y-%m-%d %H:%M:%S} {result.detail}"
        self.rows[check.id] = {**out.row, "latency_ms": result.latency_ms, "at": now,
                               "last_failure": self.failures[check.id]}
        return out.row

    def _save(self, check_id: str, state: CheckState, now: datetime) -> None:
        self.store.save_check(state)
        self.saved[check_id], self.saved_at[check_id] = significant(state, self.checks[check_id]), now

    def _heartbeat(self, now: datetime) -> dict:
        down = sorted(i for i, s in self.states.items() if s.status == "down")
        return {"source": self.source, "checks": len(self.checks), "down": down, "probes": self.probes,
                "since": self.started.isoformat(), "at": now.isoformat()}


def _last_failure(state: CheckState) -> str:
    failed = [p for p in state.probes if not p.ok]
    return f"{failed[-1].at:%Y-%m-%d %H:%M:%S} {failed[-1].detail}" if failed else ""


def latest_markdown(rows: list[dict], now: datetime) -> str:
    """The latest pass as a markdown table: check, state, failure streak, latency, last probe, last failure."""
    lines = [f"# charhub-ops monitor — latest probes ({now:%Y-%m-%d %H:%M:%S} UTC)", "",
             "| check | state | streak | latency | last probe | detail | last failure |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["id"]):
        latency = f"{r['latency_ms']:.0f} ms" if r.get("latency_ms") is not None else ""
        cells = [r["id"], r["state"], str(r["streak"]), latency, f"{r['at']:%H:%M:%S}", r["detail"],
                 r["last_failure"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"
