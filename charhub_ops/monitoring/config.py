"""The monitor's configuration: a YAML file validated by pydantic (more keys allowed, every check has a stable id).

Defaults are CharHub's ops thresholds: alert after 3 failures, recover after 2 passes, p95 < 200 ms, error rate
< 1 %, CPU < 80 %, connections < 90, disk 70 / 80 / 85 %, backups younger than 26 h, WAL archived within
5 min while writes happen.
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from charhub_ops.errors import ConfigError
from charhub_ops.monitoring.schedule import parse_interval

__all__ = ["CheckBase", "HttpCheck", "PostgresCheck", "ContainerCheck", "LogErrorsCheck", "DiskCheck",
           "BackupsCheck", "ArchiveCheck", "Check", "RecurringWindow", "MonitorConfig", "load_config", "MITIGATIONS"]

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # also a valid Prefect variable name and event resource part
Severity = Literal["critical", "high", "medium", "low"]
MITIGATIONS = ("restart_container", "terminate_blockers", "docker_cleanup")


class CheckBase(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(description="Stable id: lowercase letters, digits, '-' and '_'")
    interval: float = Field(60.0, description="Seconds between probes in a long-running monitor (30s, 5m, 1h or "
                                              "seconds; default 60 s, the deployment's old cadence)")
    threshold: int = Field(3, ge=1, description="Consecutive failures before the check is down")
    recovery_threshold: int = Field(2, ge=1, description="Consecutive passes before it is up again")
    remind_every: float = Field(3600.0, ge=0, description="Seconds between reminders while down (0 = none)")
    severity: Severity = "high"
    container: str | None = Field(None, description="The container this check is about (diagnosis, restart)")
    mitigations: list[Literal["restart_container", "terminate_blockers", "docker_cleanup"]] = Field(
        default_factory=list, description="Actions the incident flow may take (each also needs its runbook)")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ID_RE.match(value):
            raise ValueError(f"check id {value!r}: use lowercase letters, digits, '-' and '_' (max 63)")
        return value

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value):
        return parse_interval(value)


class HttpCheck(CheckBase):
    type: Literal["http"]
    url: str
    expect_status: int = 200
    expect_json: dict = Field(default_factory=dict, description="Top-level JSON fields and their expected values")
    timeout: float = Field(5.0, gt=0)
    latency_budget_ms: float = Field(200.0, gt=0, description="p95 over the last `latency_window` probes")
    latency_window: int = Field(20, ge=1, le=100)
    bearer_secret: str | None = Field(None, description="Prefect Secret block holding a Bearer token")


class PostgresCheck(CheckBase):
    type: Literal["postgres"]
    database_url_env: str = Field("DATABASE_URL", description="Environment variable with the database URL")
    max_connections_alert: int = Field(90, ge=1, description="Alert at this many connections")
    lock_wait_seconds: float = Field(30.0, ge=0, description="Sessions waiting on a lock longer than this")
    long_query_seconds: float = Field(300.0, ge=0)
    idle_in_transaction_seconds: float = Field(300.0, ge=0)


class ContainerCheck(CheckBase):
    type: Literal["container"]
    cpu_max_percent: float | None = Field(80.0, description="CPU % of one sample (stats API); None = not checked")
    memory_max_percent: float | None = Field(90.0, description="Memory % of the limit; None = not checked")


class LogErrorsCheck(CheckBase):
    type: Literal["log_errors"]
    tail: int = Field(1000, ge=1, description="Recent log lines read")
    pattern: str = Field(r'" 5\d\d ', description="Lines counted as errors (default: HTTP 5xx in an access log)")
    total_pattern: str = Field(r'" \d{3} ', description="Lines counted as requests")
    max_rate: float = Field(0.01, ge=0, le=1)
    min_lines: int = Field(20, ge=1, description="Fewer requests than this never fail the check")


class DiskCheck(CheckBase):
    type: Literal["disk"]
    paths: list[str] = Field(default_factory=lambda: ["/"])
    levels: list[float] = Field(default_factory=lambda: [70.0, 80.0, 85.0],
                                description="clean / warn / critical; the check fails from the second level")


class BackupsCheck(CheckBase):
    type: Literal["backups"]
    repository: str | None = Field(None, description="Default: the repository setting")
    databases: list[str] = Field(default_factory=list, description="Default: every database in the repository")
    max_age_hours: float = Field(26.0, gt=0)


class ArchiveCheck(CheckBase):
    type: Literal["archive"]
    database_url_env: str = Field("DATABASE_URL", description="Environment variable with the database URL")
    database_container: str | None = Field(
        None, description="Query through psql inside this container (Docker API; the URL as seen inside it), "
                          "else psycopg from here")
    max_archive_age: float = Field(300.0, gt=0, description="The last archival may be this old while WAL waits "
                                                            "(30s, 5m, 1h or seconds)")
    max_backup_age: float | None = Field(26 * 3600.0, description="Newest pgBackRest backup at most this old "
                                                                  "(when its info is readable); null = not checked")
    backup_info_timeout: float = Field(5.0, gt=0, le=60, description="pgBackRest's io-timeout for the info "
                                                                     "call: an unreachable repository is a note "
                                                                     "after about four times this")

    @field_validator("max_archive_age", "max_backup_age", mode="before")
    @classmethod
    def _age(cls, value):
        return None if value is None else parse_interval(value)


Check = Annotated[HttpCheck | PostgresCheck | ContainerCheck | LogErrorsCheck | DiskCheck | BackupsCheck
                  | ArchiveCheck, Field(discriminator="type")]


class RecurringWindow(BaseModel):
    """A maintenance window repeating on weekdays (Gatus: start, duration, every, timezone)."""

    checks: list[str] = Field(default_factory=list, description="Check ids; empty = every check")
    start: time
    duration_minutes: float = Field(gt=0, le=7 * 24 * 60)
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"])
    timezone: str = "UTC"
    reason: str = "maintenance"


class MonitorConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    checks: list[Check]
    incident_dir: str = "docs/06-operations/incident-response"
    maintenance: list[RecurringWindow] = Field(default_factory=list)
    restart_budget_per_hour: int = Field(3, ge=0, description="Restarts per container and hour, whichever check asks")
    cleanup_deployment: str | None = Field(
        None, description="Deployment run for docker_cleanup, as 'flow-name/deployment-name'")
    cleanup_parameters: dict = Field(default_factory=dict, description="Its parameters (e.g. Docker part only)")
    recheck_seconds: float = Field(30.0, ge=0, description="How long a re-check after an action may take")
    notify_block: str | None = Field(None, description="Notification block; default: the notify_block setting")
    owner: str = Field("the on-call operator", description="Who must act when mitigation fails")
    log_lines: int = Field(50, ge=0, description="Container log lines in a diagnosis")
    keep_closed_days: float = Field(90.0, gt=0, description="Resolved incidents kept in the state store (reports stay)")
    heartbeat_every: float = Field(600.0, description="Seconds between charhub.monitor.heartbeat events of a "
                                                     "long-running monitor (30s, 5m, 1h or seconds)")
    publish_every: float = Field(600.0, description="Seconds between updates of the latest-pass artifact when "
                                                   "nothing changed (it is updated at once on a change)")

    @field_validator("heartbeat_every", "publish_every", mode="before")
    @classmethod
    def _every(cls, value):
        return parse_interval(value)

    @field_validator("checks")
    @classmethod
    def _unique(cls, checks: list) -> list:
        seen = [c.id for c in checks]
        dupes = sorted({i for i in seen if seen.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate check ids: {', '.join(dupes)}")
        return checks

    def check(self, check_id: str):
        for c in self.checks:
            if c.id == check_id:
                return c
        raise ConfigError(f"monitor config: no check with id {check_id!r}")


def load_config(path: str | Path) -> MonitorConfig:
    """Read and validate the YAML file; ConfigError names the file and the first problems."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"monitor config {path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"monitor config {path}: not YAML: {exc}") from exc
    try:
        return MonitorConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigError(f"monitor config {path}: {problems}") from exc
