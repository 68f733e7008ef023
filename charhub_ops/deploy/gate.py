"""The health gate of a deployment: every configured check of the deployed services passes ``passes`` times
in a row within ``timeout`` seconds — a real answer from each check (an HTTP health endpoint at least),
never a container merely being "Up".

:func:`observe` and :func:`verdict` are pure (the clock is an argument); :func:`run_gate` probes the checks
round after round until the verdict is in. :func:`service_checks` finds the checks of each service in the
monitor config: a check belongs to the container it names (``container:``; for container and log checks
without one, their id).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from charhub_ops.errors import ConfigError
from charhub_ops.monitoring.checks import CheckResult
from charhub_ops.monitoring.config import MonitorConfig

__all__ = ["Gate", "observe", "verdict", "run_gate", "service_checks", "check_ids"]

Verdict = Literal["passed", "failed", "waiting"]


class Gate(BaseModel):
    checks: list[str]
    passes: int = Field(ge=1)
    timeout: float = Field(ge=0)
    started: datetime
    streaks: dict[str, int] = Field(default_factory=dict, description="Consecutive passes per check")
    details: dict[str, str] = Field(default_factory=dict, description="The latest probe's detail per check")
    rounds: int = 0
    finished: datetime | None = None

    @property
    def seconds(self) -> float:
        return ((self.finished or self.started) - self.started).total_seconds()

    @property
    def failing(self) -> dict[str, str]:
        return {c: self.details.get(c, "never probed") for c in self.checks if self.streaks.get(c, 0) < self.passes}


def observe(gate: Gate, results: list[CheckResult], now: datetime) -> Gate:
    """One round of probe results: a pass extends the check's streak, a failure resets it to 0."""
    streaks, details = dict(gate.streaks), dict(gate.details)
    for r in results:
        streaks[r.id] = streaks.get(r.id, 0) + 1 if r.ok else 0
        details[r.id] = r.detail
    return gate.model_copy(update={"streaks": streaks, "details": details, "rounds": gate.rounds + 1,
                                   "finished": now})


def verdict(gate: Gate, now: datetime) -> Verdict:
    """passed: every check's streak reached ``passes``; failed: not so by ``timeout``; else waiting."""
    if all(gate.streaks.get(c, 0) >= gate.passes for c in gate.checks):
        return "passed"
    return "failed" if (now - gate.started).total_seconds() >= gate.timeout else "waiting"


def run_gate(checks: list, probe: Callable[[object], CheckResult], passes: int, timeout: float, interval: float,
             clock: Callable[[], datetime], sleep: Callable[[float], None] = time.sleep) -> tuple[Gate, Verdict]:
    """Probe every check each round (``interval`` seconds apart) until all passed ``passes`` times in a row
    (passed) or ``timeout`` seconds went by (failed; at least one round always runs)."""
    gate = Gate(checks=[c.id for c in checks], passes=passes, timeout=timeout, started=clock())
    while True:
        gate = observe(gate, [probe(c) for c in checks], clock())
        outcome = verdict(gate, gate.finished)
        if outcome != "waiting":
            return gate, outcome
        sleep(interval)


def _belongs(check, service: str) -> bool:
    if check.container:
        return check.container == service
    return check.type in ("container", "log_errors") and check.id == service


def service_checks(cfg: MonitorConfig, services: list[str]) -> dict[str, list]:
    """The checks of each service; ConfigError when a service has no HTTP check (the gate needs a real
    answer from a health endpoint, a container state is not enough)."""
    found = {s: [c for c in cfg.checks if _belongs(c, s)] for s in services}
    missing = [s for s, checks in found.items() if not any(c.type == "http" for c in checks)]
    if missing:
        raise ConfigError(f"deploy: no http check names the container {', '.join(missing)} in the monitor config "
                          "(add one with `container: NAME`: the health gate needs a real answer from the service)")
    return found


def check_ids(by_service: dict[str, list]) -> list[str]:
    return [c.id for checks in by_service.values() for c in checks]
