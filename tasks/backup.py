"""Prefect tasks of the backup flow: its configuration, preflight, dump (directly or through docker exec),
globals, the previous backup, the manifest (written last), the report artifact."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, update_progress_artifact
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.concurrency.sync import concurrency
from prefect.utilities.context import get_task_and_flow_run_ids
from pydantic import BaseModel

from charhub_ops import progress
from charhub_ops.backup import catalog, engine
from charhub_ops.backup.manifest import Manifest, ObjectRef, new_backup_id
from charhub_ops.fmt import human_bytes
from charhub_ops.pgurl import PgUrl
from charhub_ops.settings import BackupSettings, Settings
from charhub_ops.streams import parse_recipients
from tasks.common import RETRY, RepoSpec, database_url, repo_spec
from tasks.locks import database_lock

__all__ = ["BackupConfig", "resolve_backup_config", "preflight", "dump_database", "dump_globals", "previous_backup",
           "write_manifest", "backup_report", "BACKUP_LIMIT"]

BACKUP_LIMIT = "charhub-ops-backup"


class BackupConfig(BaseModel):
    model_config = {"arbitrary_types_allowed": True}

    repo: RepoSpec
    url: PgUrl
    container: str | None
    options: BackupSettings  # recipients (encrypt_to), zstd level/threads, hash limit, parallelism, anomaly bounds


@task(name="resolve-config", cache_policy=NONE)
def resolve_backup_config(settings: Settings, database_url_secret: str | None) -> BackupConfig:
    """The run's settings (read by the flow, its parameters over the environment) and the database URL
    (setting or Secret block), validated before any work."""
    parse_recipients(settings.backup.encrypt_to)
    return BackupConfig(repo=repo_spec(settings.storage), url=database_url(settings.database, database_url_secret),
                        container=settings.database.docker_container, options=settings.backup)


@task(name="preflight", cache_policy=NONE, **RETRY)
def preflight(url: PgUrl, container: str | None, all_databases: bool) -> engine.Preflight:
    """Connect, read version/sizes/databases, choose where pg_dump runs."""
    pre = engine.preflight(url, container, all_databases)
    get_run_logger().info("PostgreSQL %s, %d database(s), pg_dump runs %s (%s)", pre.server_version,
                          len(pre.databases), pre.method, pre.pg_dump_version)
    return pre


class _ProgressSink:
    """Feeds dump progress to the CLI listeners and, throttled, to a Prefect progress artifact: every ``every``
    seconds (2), the first one ``every`` seconds after the start — so a short dump makes no API call for it at all
    (each one from the stream thread opens a new API client). The artifact is created at that first update, for
    the task run that made the sink. Units: raw dump bytes against ``expected``, an estimate of the raw size
    (progress.expected_total)."""

    def __init__(self, name: str, expected: int | None, every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.expected, self.done, self.every, self.clock = name, expected, 0, every, clock
        self.last = clock()
        self.run_ids = get_task_and_flow_run_ids()  # (task run, flow run): the stream thread has no run context
        self.artifact: UUID | None = None

    def __call__(self, n: int) -> None:
        self.done += n
        progress.report(self.name, n, self.expected)
        now = self.clock()
        if self.expected and now - self.last > self.every:
            self.last = now
            self._show(min(99.0, 100.0 * self.done / self.expected))

    def _show(self, percent: float) -> None:
        if self.artifact is not None:
            update_progress_artifact(self.artifact, percent)
            return
        task_run_id, flow_run_id = self.run_ids
        with get_client(sync_client=True) as client:
            self.artifact = client.create_artifact(ArtifactCreate(
                type="progress", data=percent, description=f"Backing up {self.name}",
                task_run_id=task_run_id, flow_run_id=flow_run_id)).id

    def finish(self) -> None:
        if self.artifact is not None:
            update_progress_artifact(self.artifact, 100.0)


@task(name="dump-database", cache_policy=NONE, **RETRY)
def dump_database(repo: RepoSpec, url: PgUrl, pre: engine.Preflight, database: str, *,
                  recipients: list[str], level: int, threads: int, hash_limit: int,
                  expected_size: int | None, limit: str | None = None,
                  expected_raw_size: int | None = None) -> engine.DumpResult:
    """pg_dump → zstd → age → SHA-256 → repository, under the global concurrency limit ``limit`` if given.
    ``expected_size`` (stored bytes, an upper bound) sizes the upload parts; ``expected_raw_size`` is
    the progress total (raw dump bytes)."""
    with database_lock(database), concurrency(limit, occupy=1, strict=True) if limit else nullcontext():
        backup_id = new_backup_id(_now())
        sink = _ProgressSink(database, expected_raw_size)
        result = engine.dump_database(repo.open(), url, pre, database, backup_id, recipients=recipients,
                                      level=level, threads=threads, expected_size=expected_size,
                                      hash_limit=hash_limit, progress=sink)
        sink.finish()
    get_run_logger().info("%s: %d bytes stored (%d raw), sha256 %s", database, result.stored_size_bytes,
                          result.raw_size_bytes, result.sha256[:16])
    return result


@task(name="dump-globals", cache_policy=NONE, **RETRY)
def dump_globals(repo: RepoSpec, url: PgUrl, pre: engine.Preflight, dump: engine.DumpResult, *,
                 recipients: list[str], level: int) -> tuple[ObjectRef | None, str | None]:
    """pg_dumpall --globals-only beside the dump (roles are needed to restore ownership)."""
    ref, note = engine.dump_globals(repo.open(), url, pre, dump.database, dump.backup_id,
                                    recipients=recipients, level=level)
    if note:
        get_run_logger().warning("%s: %s", dump.database, note)
    return ref, note


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)



@task(name="previous-backup", cache_policy=NONE, **RETRY)
def previous_backup(repo: RepoSpec, database: str) -> Manifest | None:
    """The newest complete backup of ``database`` (sizes the upload parts, baseline for anomalies).
    An unreadable manifest is skipped with a warning in the run's log."""
    return catalog.latest_backup(repo.open(), database, warn=get_run_logger().warning)


@task(name="write-manifest", cache_policy=NONE, **RETRY)
def write_manifest(repo: RepoSpec, pre: engine.Preflight, dump: engine.DumpResult,
                   globals_result: tuple[ObjectRef | None, str | None], *, recipients: list[str],
                   level: int) -> Manifest:
    """Write the manifest last: the backup exists from this moment on."""
    manifest = engine.build_manifest(pre, dump, globals_result[0], globals_result[1], recipients, level)
    key = engine.write_manifest(repo.open(), manifest)
    get_run_logger().info("backup %s complete: %s", manifest.backup_id, key)
    return manifest


@task(name="backup-report", cache_policy=NONE)
def backup_report(repository: str, manifests: list[Manifest], anomalies: dict[str, str]) -> str:
    """A markdown artifact: per database size, duration, throughput, checksum and anomaly flag."""
    lines = [
        f"# Backup to `{repository}`", "",
        "| database | backup id | stored | raw | duration | throughput | tables | rows | sha256 | encrypted "
        "| anomaly |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in manifests:
        secs = max(m.duration_seconds, 0.001)
        lines.append(
            f"| {m.database} | `{m.backup_id}` | {human_bytes(m.stored_size_bytes)} | {human_bytes(m.raw_size_bytes)} "
            f"| {secs:.1f} s | {human_bytes(m.raw_size_bytes / secs)}/s | {len(m.tables)} "
            f"| {sum(t.rows for t in m.tables)} | `{m.sha256[:16]}…` | {'age' if m.encrypted else 'no'} "
            f"| {'⚠ ' + anomalies[m.database] if m.database in anomalies else '—'} |")
    markdown = "\n".join(lines)
    create_markdown_artifact(markdown, key="backup-report", description="charhub-ops backup")
    return markdown
