"""The alerting state machine of one check: pure, the clock is an argument (Gatus / Uptime Kuma semantics).

* a failure streak; ``down`` once when it reaches ``threshold`` (default 3) — PENDING before that, no alert;
* ``recovered`` once after ``recovery_threshold`` consecutive passes (default 2): a check flapping while down
  stays down (a failure resets the pass streak), so it never opens a second incident;
* ``reminder`` no more often than ``remind_every`` seconds while down;
* inside a maintenance window a streak that reaches the threshold is ``suppressed`` (no down, no incident,
  no reminder); once the window ends, the next failure of a still-failing check goes down.

``step`` returns the new state and the events of this probe; it never mutates its input.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["Probe", "DiskSample", "DiskHistory", "CheckState", "Step", "step", "p95", "add_disk_sample"]

PROBES_KEPT = 10
DISK_SAMPLE_EVERY = 6 * 3600  # seconds between kept disk samples (the capacity forecast reads them)
DISK_SAMPLES_KEPT = 120       # 30 days of them ...
DISK_VALUES_KEPT = 480        # ... but at most this many percentages in all (paths × samples): a Variable is small
Event = Literal["failed", "down", "reminder", "recovered", "suppressed"]


class Probe(BaseModel):
    at: datetime
    ok: bool
    detail: str = ""
    latency_ms: float | None = None


class DiskSample(BaseModel):
    """A disk check's usage at one probe: percent used and total bytes per path."""

    at: datetime
    usage: dict[str, float]
    total_bytes: dict[str, int] = Field(default_factory=dict)


class DiskHistory(BaseModel):
    """A disk check's kept samples by column (compact: it lives in the check's Prefect Variable)."""

    times: list[int] = Field(default_factory=list)                       # epoch seconds
    usage: dict[str, list[float | None]] = Field(default_factory=dict)   # path → percent used per time
    total_bytes: dict[str, int] = Field(default_factory=dict)            # path → size at its newest sample

    def samples(self) -> list[DiskSample]:
        return [DiskSample(at=datetime.fromtimestamp(t, UTC), total_bytes=self.total_bytes,
                           usage={p: v[i] for p, v in self.usage.items() if v[i] is not None})
                for i, t in enumerate(self.times)]


class CheckState(BaseModel):
    """Everything remembered about one check between runs (small: it lives in a Prefect Variable)."""

    check_id: str
    status: Literal["up", "down"] = "up"
    fail_streak: int = 0
    pass_streak: int = 0
    first_failure_at: datetime | None = None   # first failure of the current streak / outage
    down_at: datetime | None = None            # when the threshold was reached (detection)
    recovered_at: datetime | None = None
    last_reminder_at: datetime | None = None
    failed_probes: int = 0                     # failures since first_failure_at
    latencies: list[float] = Field(default_factory=list)
    probes: list[Probe] = Field(default_factory=list)
    level: int = 0                             # disk: how many levels the fullest path passed
    restart_count: int | None = None           # container: at the last probe
    archive_failed_count: int | None = None    # archive: pg_stat_archiver.failed_count at the last probe
    wal_lsn: int | None = None                 # archive: the WAL position (bytes) at the last probe
    disk_history: DiskHistory = Field(default_factory=DiskHistory)  # disk: one sample per DISK_SAMPLE_EVERY


class Step(BaseModel):
    state: CheckState
    events: list[Event]


def step(state: CheckState, ok: bool, detail: str, now: datetime, *, threshold: int = 3,
         recovery_threshold: int = 2, remind_every: float = 3600.0, maintenance: bool = False,
         latency_ms: float | None = None, latency_window: int = 20) -> Step:
    """Apply one probe result to ``state``; returns the new state and its events."""
    s = state.model_copy(deep=True)
    s.probes = [*s.probes, Probe(at=now, ok=ok, detail=detail[:200], latency_ms=latency_ms)][-PROBES_KEPT:]
    if latency_ms is not None:
        s.latencies = [*s.latencies, round(latency_ms, 1)][-latency_window:]
    return _failed(s, now, threshold, remind_every, maintenance) if not ok else _passed(s, now, recovery_threshold)


def _failed(s: CheckState, now: datetime, threshold: int, remind_every: float, maintenance: bool) -> Step:
    s.fail_streak, s.pass_streak = s.fail_streak + 1, 0
    if s.fail_streak == 1 and s.status == "up":
        s.first_failure_at, s.failed_probes = now, 0
    s.failed_probes += 1
    events: list[Event] = ["failed"]
    if s.status == "up" and s.fail_streak >= threshold:
        if maintenance:
            events.append("suppressed")
        else:
            s.status, s.down_at, s.last_reminder_at, s.recovered_at = "down", now, now, None
            events.append("down")
    elif s.status == "down" and not maintenance and remind_every > 0 and s.last_reminder_at is not None \
            and (now - s.last_reminder_at).total_seconds() >= remind_every:
        s.last_reminder_at = now
        events.append("reminder")
    return Step(state=s, events=events)


def _passed(s: CheckState, now: datetime, recovery_threshold: int) -> Step:
    s.pass_streak, s.fail_streak = s.pass_streak + 1, 0
    if s.status == "down" and s.pass_streak >= recovery_threshold:
        s.status, s.recovered_at = "up", now
        return Step(state=s, events=["recovered"])
    if s.status == "up":
        s.first_failure_at, s.failed_probes = None, 0
    return Step(state=s, events=[])


def p95(values: list[float]) -> float | None:
    """The 95th percentile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-95 * len(ordered) // 100))  # ceil(0.95 n)
    return ordered[rank - 1]


def add_disk_sample(history: DiskHistory, sample: DiskSample, every: float = DISK_SAMPLE_EVERY,
                    keep: int = DISK_SAMPLES_KEPT) -> DiskHistory:
    """``history`` plus ``sample`` when its newest sample is at least ``every`` seconds older; at most ``keep``
    samples (fewer with many paths: DISK_VALUES_KEPT in all), the oldest go first. Returns a new history."""
    at = int(sample.at.timestamp())
    if history.times and at - history.times[-1] < every:
        return history.model_copy(deep=True)
    keep = max(2, min(keep, DISK_VALUES_KEPT // max(1, len(sample.usage))))
    blank = [None] * len(history.times)
    usage = {p: [*history.usage.get(p, blank), sample.usage.get(p)][-keep:]
             for p in sorted(set(history.usage) | set(sample.usage))}
    usage = {p: v for p, v in usage.items() if any(x is not None for x in v)}
    totals = {p: n for p, n in {**history.total_bytes, **sample.total_bytes}.items() if p in usage}
    return DiskHistory(times=[*history.times, at][-keep:], usage=usage, total_bytes=totals)
