"""Mitigations the runbooks allow, each with a pre-condition and a re-check after it.

Per check type the runbook names the actions it allows; the config enables some of them per check
(``mitigations: [...]``). An action that is allowed but not enabled, over its budget, or whose
pre-condition does not hold is *reported, not run* (``ActionResult.ran = False``). The re-check is the
check's own probe, repeated until it passes or ``wait`` seconds have passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from charhub_ops.errors import OpsError
from charhub_ops.monitoring import pgfacts
from charhub_ops.monitoring.checks import CheckResult
from charhub_ops.monitoring.dockerfacts import container_facts, restart_container
from charhub_ops.monitoring.incident_model import ActionResult, budget_left, prune_budget

__all__ = ["RUNBOOK", "planned_actions", "not_run", "restart_action", "terminate_action", "cleanup_action",
           "recheck"]

RUNBOOK = {"http": ("restart_container",), "container": ("restart_container",),
           "log_errors": ("restart_container",), "postgres": ("terminate_blockers",),
           "disk": ("docker_cleanup",), "backups": (), "archive": ()}
Probe = Callable[[], CheckResult]


def _now() -> datetime:
    return datetime.now(UTC)


def planned_actions(check) -> tuple[list[str], list[ActionResult]]:
    """(actions to try, results of those reported as not run: disabled or not in the runbook)."""
    allowed = RUNBOOK[check.type]
    enabled = [a for a in allowed if a in check.mitigations]
    skipped = [not_run(a, f"disabled: not in this check's mitigations (runbook for {check.type} allows it)")
               for a in allowed if a not in check.mitigations]
    skipped += [not_run(a, f"not allowed by the runbook for {check.type} checks")
                for a in check.mitigations if a not in allowed]
    return enabled, skipped


def not_run(action: str, why: str) -> ActionResult:
    return ActionResult(action=action, ok=False, ran=False, detail=why, at=_now())


def recheck(probe: Probe, wait: float, interval: float = 0.5) -> CheckResult:
    """Probe until it passes or ``wait`` seconds have passed; the last result."""
    deadline = time.monotonic() + wait
    while True:
        result = probe()
        if result.ok or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


def restart_action(check, restarts: list[datetime], per_hour: int, probe: Probe,
                   wait: float = 30.0) -> tuple[ActionResult, list[datetime]]:
    """Restart ``check.container`` if it is down or unhealthy, or the check still fails; at most ``per_hour``
    restarts in any hour (``restarts``: the container's earlier restarts, by any check, returned with this one
    added)."""
    now = _now()
    if not check.container:
        return not_run("restart_container", "no container configured for this check"), restarts
    if budget_left(restarts, now, per_hour) == 0:
        return not_run("restart_container", f"over budget: {len(prune_budget(restarts, now))} restart(s) in the "
                                             f"last hour (restart_budget_per_hour {per_hour})"), restarts
    facts, before = container_facts(check.container), probe()
    if facts["running"] and facts["health"] in (None, "healthy", "starting") and before.ok:
        return not_run("restart_container", f"pre-condition not met: {check.container} is running and the "
                                             "check passes again"), restarts
    why = f"{check.container} {facts['status']}, health {facts['health'] or 'n/a'}; check: {before.detail}"
    restart_container(check.container)
    restarts = [*prune_budget(restarts, now), now]
    after = recheck(probe, wait)
    return ActionResult(action="restart_container", ok=after.ok, ran=True, at=now,
                        detail=f"restarted ({why}); re-check: {after.detail}"), restarts


def terminate_action(check, url: str | None, probe: Probe, wait: float = 10.0) -> ActionResult:
    """Cancel, then terminate, backends blocking others longer than ``lock_wait_seconds`` or idle in
    transaction longer than ``idle_in_transaction_seconds`` — never a session of charhub-ops (a backup's
    snapshot, its pg_dump: see pgfacts); the list is read again before the terminate."""
    now = _now()
    if not url:
        return not_run("terminate_blockers", "no database URL for this check")
    found = pgfacts.blockers(url, check.lock_wait_seconds, check.idle_in_transaction_seconds)
    if not found:
        return not_run("terminate_blockers", "pre-condition not met: no backend blocks others or idles in a "
                                             "transaction past the limits")
    steps = [f"pid {pid} {why}" for pid, why in found.items()]
    pgfacts.signal_backends(url, list(found), "cancel")
    time.sleep(1.0)
    still = [pid for pid in pgfacts.blockers(url, check.lock_wait_seconds, check.idle_in_transaction_seconds)
             if pid in found]
    if still:
        done = pgfacts.signal_backends(url, still, "terminate")
        steps.append("terminated " + ", ".join(str(p) for p, ok in done.items() if ok))
    else:
        steps.append("cancel was enough")
    after = recheck(probe, wait)
    return ActionResult(action="terminate_blockers", ok=after.ok, ran=True, at=now,
                        detail="; ".join(steps) + f"; re-check: {after.detail}")


def cleanup_action(run_cleanup: Callable[[], str] | None, probe: Probe, wait: float = 30.0) -> ActionResult:
    """Run the cleanup flow's Docker part (through ``run_cleanup``, given by the flow) if the disk is still high."""
    now = _now()
    if run_cleanup is None:
        return not_run("docker_cleanup", "no cleanup deployment configured (cleanup_deployment in the monitor config)")
    before = probe()
    if before.ok:
        return not_run("docker_cleanup", f"pre-condition not met: {before.detail}")
    try:
        outcome = run_cleanup()
    except OpsError as exc:
        return ActionResult(action="docker_cleanup", ok=False, ran=True, at=now, detail=f"cleanup failed: {exc}")
    after = recheck(probe, wait)
    return ActionResult(action="docker_cleanup", ok=after.ok, ran=True, at=now,
                        detail=f"{outcome}; re-check: {after.detail}")
