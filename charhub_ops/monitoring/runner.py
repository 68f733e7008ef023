"""One monitor pass, shared by the ``monitor`` flow and ``charhub-ops health`` without a Prefect server.

:func:`evaluate` applies one probe result to a check's state (the pure state machine plus the disk level)
and names the events to emit (a disk check also keeps a usage sample every 6 h for
:mod:`charhub_ops.capacity`, an archive check the archiver's failure count and WAL position);
:func:`run_pass` probes every check in order and saves the states — the flow does the same with one Prefect
task per probe and emits the events to the server.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from charhub_ops.errors import ConfigError
from charhub_ops.monitoring.checks import CheckContext, CheckResult, run_check
from charhub_ops.monitoring.config import MonitorConfig
from charhub_ops.monitoring.state import CheckState, DiskSample, add_disk_sample, step
from charhub_ops.monitoring.store import MonitorState
from charhub_ops.monitoring.windows import active_windows
from charhub_ops.pitr.command import PgBackRest, read_info
from charhub_ops.settings import Settings
from charhub_ops.storage import open_storage

__all__ = ["EVENTS", "Outcome", "context_for", "newest_backup", "evaluate", "run_pass"]

EVENTS = {"failed": "charhub.check.failed", "down": "charhub.service.down", "recovered": "charhub.service.recovered",
          "reminder": "charhub.service.reminder", "suppressed": "charhub.service.suppressed",
          "disk_high": "charhub.disk.high"}


@dataclass
class Outcome:
    state: CheckState
    events: list[str]          # keys of EVENTS, in order
    row: dict                  # id, ok, detail, streak, state, events, maintenance
    payload: dict              # check_id, severity, detail, ... (no secrets: details are redacted)


def context_for(check, settings: Settings, state: CheckState, now: datetime,
                bearer: str | None = None) -> CheckContext:
    """What the probe of ``check`` needs; the database URL comes from its environment variable (else the
    database_url setting), never from the config file."""
    env = getattr(check, "database_url_env", None)
    url = os.environ.get(env) if env else None
    if url is None and env and settings.database.database_url is not None:
        url = settings.database.database_url.get_secret_value()
    return CheckContext(now=now, latencies=state.latencies, restart_count=state.restart_count, bearer_token=bearer,
                        database_url=url, secrets=settings.secret_values(bearer, url),
                        open_repository=lambda repo: open_storage(repo or settings.storage.repository,
                                                                  settings.storage.s3_options()),
                        archive_failed_count=state.archive_failed_count, wal_lsn=state.wal_lsn,
                        newest_backup=newest_backup(check, settings))


def newest_backup(check, settings: Settings) -> Callable[[], datetime | None] | None:
    """For an archive check, reading the newest pgBackRest backup's stop time (None: no backup) — only when
    the pitr group names a repository (pgBackRest configured); None otherwise (its age is not judged)."""
    if getattr(check, "type", None) != "archive" or check.max_backup_age is None or not settings.pitr.repository:
        return None
    secrets = settings.secret_values()
    pgbackrest = PgBackRest(settings.pitr, container=check.database_container or settings.database.docker_container,
                            secrets=secrets)

    def read() -> datetime | None:  # a short io-timeout: a probe must not hang for minutes on a dead repository
        text = pgbackrest.run("info", "--output=json", f"--io-timeout={check.backup_info_timeout:g}")
        stanza = read_info(text, settings.pitr.stanza, config=settings.pitr.config_path, secrets=secrets)
        if not stanza.exists:
            raise ConfigError(f"pgBackRest stanza {stanza.name} does not exist yet (charhub-ops pitr setup)")
        return stanza.newest.stop if stanza.newest else None
    return read


def evaluate(check, result: CheckResult, previous: CheckState, in_window: list[str], now: datetime) -> Outcome:
    moved = step(previous, result.ok, result.detail, now, threshold=check.threshold,
                 recovery_threshold=check.recovery_threshold, remind_every=check.remind_every,
                 maintenance=bool(in_window), latency_ms=result.latency_ms,
                 latency_window=getattr(check, "latency_window", 20))
    new = moved.state
    new.restart_count = result.facts.get("restart_count", new.restart_count)
    new.archive_failed_count = result.facts.get("failed_count", new.archive_failed_count)
    new.wal_lsn = result.facts.get("lsn", new.wal_lsn)
    events = list(moved.events)
    if check.type == "disk" and result.level > previous.level:
        events.append("disk_high")
    new.level = result.level
    if check.type == "disk" and result.facts.get("usage"):
        sample = DiskSample(at=now, usage=result.facts["usage"], total_bytes=result.facts.get("total_bytes", {}))
        new.disk_history = add_disk_sample(new.disk_history, sample)
    payload = {"check_id": check.id, "severity": check.severity, "detail": result.detail, "type": check.type,
               "streak": new.fail_streak, "status": new.status}
    if check.type == "disk":
        payload.update(level=result.level, usage=result.facts.get("usage"))
    if in_window:
        payload["maintenance"] = in_window
    row = {"id": check.id, "ok": result.ok, "detail": result.detail, "streak": new.fail_streak,
           "state": "maintenance" if in_window else new.status, "events": events, "maintenance": in_window}
    return Outcome(new, events, row, payload)


def run_pass(cfg: MonitorConfig, store: MonitorState, settings: Settings, now: datetime,
             emit: Callable[[str, str, dict], None] | None = None) -> list[dict]:
    """Probe every check, save the states, hand each event to ``emit(event, resource, payload)``."""
    windows, rows = store.windows(), []
    for check in cfg.checks:
        previous = store.check(check.id)
        result = run_check(check, context_for(check, settings, previous, now))
        out = evaluate(check, result, previous, active_windows(check.id, now, cfg.maintenance, windows), now)
        store.save_check(out.state)
        for event in out.events:
            if emit:
                emit(EVENTS[event], f"charhub.check.{check.id}", out.payload)
        rows.append(out.row)
    return rows
