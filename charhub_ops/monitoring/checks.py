"""One probe per check type. ``run_check`` never raises for a failing target: an unreachable URL, a missing
container or a refused connection is a failed probe with its reason in ``detail`` (secrets redacted).

Docker facts come from the engine's API (``docker`` SDK), PostgreSQL facts from ``pg_stat_activity`` /
``pg_locks`` over psycopg, backups from the repository's catalog (newest manifest, latest drill verdict), WAL
archiving from ``pg_stat_archiver`` (psycopg, or psql in the database container) and pgBackRest's info
(:mod:`charhub_ops.monitoring.archive`).
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from charhub_ops.errors import ConfigError, OpsError
from charhub_ops.monitoring import pgfacts
from charhub_ops.monitoring.archive import BackupStatus, judge, read_archiver
from charhub_ops.monitoring.config import (
    ArchiveCheck,
    BackupsCheck,
    ContainerCheck,
    DiskCheck,
    HttpCheck,
    LogErrorsCheck,
    PostgresCheck,
)
from charhub_ops.monitoring.dockerfacts import container_facts, container_logs, container_stats
from charhub_ops.monitoring.redact import redact
from charhub_ops.monitoring.state import p95
from charhub_ops.pgurl import parse_pg_url
from charhub_ops.postgres import open_session

__all__ = ["CheckResult", "CheckContext", "run_check", "disk_level"]


@dataclass
class CheckResult:
    id: str
    ok: bool
    detail: str
    latency_ms: float | None = None
    level: int = 0                      # disk: how many levels the fullest path passed
    facts: dict = field(default_factory=dict)


@dataclass
class CheckContext:
    """What a probe needs besides its config: previous latencies, resolved secrets, the clock, the repository."""

    now: datetime
    latencies: list[float] = field(default_factory=list)
    restart_count: int | None = None          # a container's restart count at the previous probe
    bearer_token: str | None = None
    database_url: str | None = None
    open_repository: Callable | None = None   # (url | None) -> Storage
    secrets: list[str] = field(default_factory=list)
    archive_failed_count: int | None = None   # archive: pg_stat_archiver.failed_count at the previous probe
    wal_lsn: int | None = None                # archive: pg_current_wal_lsn() at the previous probe (bytes)
    newest_backup: Callable | None = None     # archive: () -> the newest pgBackRest backup's stop time | None


def run_check(check, ctx: CheckContext) -> CheckResult:
    runner = _RUNNERS[type(check)]
    try:
        result = runner(check, ctx)
    except OpsError as exc:
        result = CheckResult(check.id, False, str(exc))
    result.detail = redact(result.detail, ctx.secrets)
    return result


def _http(check: HttpCheck, ctx: CheckContext) -> CheckResult:
    headers = {"Authorization": f"Bearer {ctx.bearer_token}"} if ctx.bearer_token else {}
    request = urllib.request.Request(check.url, headers=headers)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=check.timeout) as resp:
            status, body = resp.status, resp.read(65536)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(65536)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        ms = (time.monotonic() - started) * 1000
        reason = getattr(exc, "reason", exc)
        return CheckResult(check.id, False, f"GET {check.url}: {reason}", latency_ms=None,
                           facts={"elapsed_ms": round(ms, 1)})
    ms = (time.monotonic() - started) * 1000
    problems = [] if status == check.expect_status else [f"status {status} (expected {check.expect_status})"]
    problems += _json_problems(body, check.expect_json)
    window = [*ctx.latencies, ms][-check.latency_window:]
    p = p95(window)
    if p is not None and p > check.latency_budget_ms:
        problems.append(f"p95 {p:.0f} ms over the last {len(window)} probes > budget {check.latency_budget_ms:g} ms")
    detail = "; ".join(problems) or f"{status} in {ms:.0f} ms (p95 {p:.0f} ms)"
    return CheckResult(check.id, not problems, detail, latency_ms=ms, facts={"status": status, "p95_ms": p})


def _json_problems(body: bytes, expected: dict) -> list[str]:
    if not expected:
        return []
    try:
        data = json.loads(body)
    except ValueError:
        return ["body is not JSON"]
    if not isinstance(data, dict):
        return ["body is not a JSON object"]
    return [f"{k} = {data.get(k)!r} (expected {v!r})" for k, v in expected.items() if data.get(k) != v]


def _postgres(check: PostgresCheck, ctx: CheckContext) -> CheckResult:
    if not ctx.database_url:
        raise ConfigError(f"check {check.id}: no database URL (environment variable {check.database_url_env})")
    facts = pgfacts.health_facts(ctx.database_url, check.lock_wait_seconds, check.long_query_seconds,
                                 check.idle_in_transaction_seconds)
    problems = []
    if facts["connections"] >= check.max_connections_alert:
        problems.append(f"{facts['connections']} connections of {facts['max_connections']} "
                        f"(alert at {check.max_connections_alert})")
    for key, what in (("lock_waits", f"waiting on a lock > {check.lock_wait_seconds:g} s"),
                      ("long_queries", f"running > {check.long_query_seconds:g} s"),
                      ("idle_in_transaction", f"idle in transaction > {check.idle_in_transaction_seconds:g} s")):
        if facts[key]:
            pids = ", ".join(str(s["pid"]) for s in facts[key][:5])
            problems.append(f"{len(facts[key])} session(s) {what} (pid {pids})")
    detail = "; ".join(problems) or f"{facts['connections']}/{facts['max_connections']} connections, no waits"
    if facts["ours"]:
        detail += f" ({len(facts['ours'])} session(s) of charhub-ops not judged)"
    return CheckResult(check.id, not problems, detail, facts=facts)


def _container(check: ContainerCheck, ctx: CheckContext) -> CheckResult:
    name = check.container or check.id
    facts = container_facts(name)
    problems = []
    if not facts["running"]:
        problems.append(f"container {name} is {facts['status']} (exit code {facts['exit_code']})")
    if facts["health"] not in (None, "healthy", "starting"):
        problems.append(f"container {name} is {facts['health']}")
    if facts["running"] and (check.cpu_max_percent is not None or check.memory_max_percent is not None):
        facts.update(container_stats(name))
        if check.cpu_max_percent is not None and facts["cpu_percent"] > check.cpu_max_percent:
            problems.append(f"CPU {facts['cpu_percent']:.0f} % > {check.cpu_max_percent:g} %")
        if check.memory_max_percent is not None and facts["memory_percent"] > check.memory_max_percent:
            problems.append(f"memory {facts['memory_percent']:.0f} % of the limit > {check.memory_max_percent:g} %")
    if ctx.restart_count is not None and facts["restart_count"] > ctx.restart_count:
        problems.append(f"restart count grew {ctx.restart_count} → {facts['restart_count']}")
    detail = "; ".join(problems) or f"{name} running, health {facts['health'] or 'n/a'}"
    return CheckResult(check.id, not problems, detail, facts=facts)


def _log_errors(check: LogErrorsCheck, ctx: CheckContext) -> CheckResult:
    name = check.container or check.id
    lines = container_logs(name, check.tail).splitlines()
    errors = sum(1 for line in lines if re.search(check.pattern, line))
    total = sum(1 for line in lines if re.search(check.total_pattern, line))
    rate = errors / total if total else 0.0
    ok = total < check.min_lines or rate <= check.max_rate
    detail = f"{errors} errors in {total} requests ({rate:.1%}; budget {check.max_rate:.1%}) in {name}'s last " \
             f"{len(lines)} log lines"
    return CheckResult(check.id, ok, detail, facts={"errors": errors, "requests": total, "rate": rate})


def disk_level(percent: float, levels: list[float]) -> int:
    """How many of the (ascending) levels ``percent`` reached: 0 = below the first."""
    return sum(1 for level in levels if percent >= level)


def _disk(check: DiskCheck, ctx: CheckContext) -> CheckResult:
    usage, total = {}, {}
    for path in check.paths:
        try:
            du = shutil.disk_usage(path)
        except OSError as exc:
            raise OpsError(f"disk: {path}: {exc.strerror or exc}") from exc
        usage[path] = round(du.used / du.total * 100, 1) if du.total else 0.0
        total[path] = du.total
    worst = max(usage, key=usage.get)
    level = disk_level(usage[worst], check.levels)
    names = ["below the clean level", "past the clean level", "past the warn level", "past the critical level"]
    detail = ", ".join(f"{p} {v:g} %" for p, v in usage.items()) + f"; {worst} {names[min(level, 3)]}"
    ok = level < min(2, len(check.levels))
    return CheckResult(check.id, ok, detail, level=level, facts={"usage": usage, "levels": check.levels,
                                                                 "total_bytes": total})


def _backups(check: BackupsCheck, ctx: CheckContext) -> CheckResult:
    from charhub_ops.backup.catalog import list_backups_verified

    storage = ctx.open_repository(check.repository)
    found = list_backups_verified(storage)
    databases = check.databases or sorted({m.database for m, _ in found})
    problems, facts = [], {}
    if not databases:
        problems.append(f"no complete backup in {storage.url}")
    for db in databases:
        mine = [(m, v) for m, v in found if m.database == db]
        if not mine:
            problems.append(f"{db}: no complete backup")
            continue
        age = (ctx.now - mine[0][0].finished_at).total_seconds() / 3600
        drill = next((v for _, v in mine if v is not None), None)
        facts[db] = {"newest": mine[0][0].backup_id, "age_hours": round(age, 2),
                     "drill_ok": drill.ok if drill else None}
        if age > check.max_age_hours:
            problems.append(f"{db}: newest backup {mine[0][0].backup_id} is {age:.1f} h old "
                            f"(> {check.max_age_hours:g} h)")
        if drill is not None and not drill.ok:
            problems.append(f"{db}: latest restore drill ({drill.backup_id}) failed: {', '.join(drill.mismatches[:3])}")
    detail = "; ".join(problems) or ", ".join(f"{db}: {f['age_hours']:g} h old" for db, f in facts.items())
    return CheckResult(check.id, not problems, detail, facts=facts)


def _backup_status(ctx: CheckContext) -> BackupStatus:
    if ctx.newest_backup is None:
        return BackupStatus.unchecked()
    try:
        return BackupStatus(checked=True, stop=ctx.newest_backup())
    except OpsError as exc:
        return BackupStatus.unchecked(str(exc))


def _archive(check: ArchiveCheck, ctx: CheckContext) -> CheckResult:
    if not ctx.database_url:
        raise ConfigError(f"check {check.id}: no database URL (environment variable {check.database_url_env})")
    with open_session(parse_pg_url(ctx.database_url), check.database_container) as session:
        row = read_archiver(session)
    backup = _backup_status(ctx) if check.max_backup_age is not None else BackupStatus.unchecked()
    verdict = judge(row, max_archive_age=check.max_archive_age, max_backup_age=check.max_backup_age,
                    previous_failed=ctx.archive_failed_count, previous_lsn=ctx.wal_lsn, backup=backup, now=row.now)
    return CheckResult(check.id, not verdict.problems, "; ".join(verdict.problems) or verdict.summary,
                       facts=verdict.facts)


_RUNNERS = {HttpCheck: _http, PostgresCheck: _postgres, ContainerCheck: _container, LogErrorsCheck: _log_errors,
            DiskCheck: _disk, BackupsCheck: _backups, ArchiveCheck: _archive}
