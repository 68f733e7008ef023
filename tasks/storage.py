"""Tasks that touch the backup repository (S3/R2 or a local directory)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from charhub_ops.backup import catalog, engine
from charhub_ops.backup.manifest import Manifest, ObjectRef
from tasks.common import RETRY, RepoSpec

__all__ = ["previous_backup", "write_manifest", "list_backups"]


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


@task(name="list-backups", cache_policy=NONE, **RETRY)
def list_backups(repo: RepoSpec, database: str | None = None) -> list[dict]:
    storage = repo.open()
    found = catalog.list_backups(storage, database, warn=get_run_logger().warning)
    return [catalog.backup_summary(storage.url, m) for m in found]
