"""Nightly logical backup of CharHub's PostgreSQL to R2 (or any S3 / local repository).

Runbook: resolve configuration → preflight (versions, sizes, where pg_dump runs) → for each database:
previous backup (part size, anomaly baseline; of a single database, read while preflight runs) → streamed
dump → globals → manifest (last) → events → one report artifact. A failure notifies through the notification
block in settings.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from charhub_ops.backup.catalog import backup_summary, size_anomaly
from charhub_ops.backup.manifest import Manifest
from charhub_ops.errors import OpsError
from charhub_ops.progress import expected_total
from flows.params import REPOSITORY_HELP, Access, AgeRecipient, Repository, described
from tasks.backup import (
    BACKUP_LIMIT,
    backup_report,
    dump_database,
    dump_globals,
    preflight,
    previous_backup,
    resolve_backup_config,
    write_manifest,
)
from tasks.common import run_settings
from tasks.notify import emit, ensure_concurrency_limit, notify_failure

__all__ = ["backup_flow"]

COMPLETED = "charhub.backup.completed"
ANOMALY = "charhub.backup.size-anomaly"


@flow(name="backup", on_failure=[notify_failure])
@described
def backup_flow(
    repository: Annotated[Repository | None, Field(description=REPOSITORY_HELP)] = None,
    all_databases: Annotated[bool, Field(description="Back up every non-template database of the server")] = False,
    access: Annotated[Access, Field(description="How to reach the database server")] = Access(),
    encrypt_to: Annotated[list[AgeRecipient] | None, Field(
        description="age public keys (age1…) to encrypt to; default from settings (CHARHUB_OPS_ENCRYPT_TO)")] = None,
) -> list[dict]:
    """Back up one database (or all of a server) into the repository; returns one summary per backup."""
    settings = run_settings(repository=repository, docker_container=access.docker_container,
                            encrypt_to=encrypt_to or None)
    cfg = resolve_backup_config(settings, access.database_url_secret)
    # one database: its previous backup is read while preflight runs (the URL names it)
    early = {} if all_databases else {cfg.url.dbname: previous_backup.submit(cfg.repo, cfg.url.dbname)}
    pre = preflight(cfg.url, cfg.container, all_databases)
    limit = BACKUP_LIMIT if len(pre.databases) > 1 else None  # one database: the deployment's limit suffices
    if limit:
        ensure_concurrency_limit(limit, cfg.options.parallel_databases)

    previous = {db: early.get(db) or previous_backup.submit(cfg.repo, db) for db in pre.databases}
    runs, opts = {}, cfg.options
    keys, level = opts.encrypt_to, opts.zstd_level
    for db in pre.databases:
        prev = previous[db].result()
        expected = max(prev.stored_size_bytes if prev else 0, pre.database_sizes.get(db, 0)) or None
        raw = expected_total(prev.raw_size_bytes if prev else None, pre.database_sizes.get(db))  # progress
        dump = dump_database.submit(cfg.repo, cfg.url, pre, db, recipients=keys, level=level,
                                    threads=opts.zstd_threads, hash_limit=opts.hash_limit_mib * 1024 * 1024,
                                    expected_size=expected, limit=limit, expected_raw_size=raw)
        globs = dump_globals.submit(cfg.repo, cfg.url, pre, dump, recipients=keys, level=level)
        runs[db] = (prev, [dump, globs, write_manifest.submit(cfg.repo, pre, dump, globs, recipients=keys,
                                                              level=level)])

    done: list[Manifest] = []
    anomalies: dict[str, str] = {}
    failures: list[OpsError | Exception] = []
    for db, (prev, futures) in runs.items():
        try:  # in pipeline order: the step that failed raises its own error, not "upstream not completed"
            manifest = [f.result() for f in futures][-1]
        except Exception as exc:  # noqa: BLE001 - every database gets its chance; the run fails below
            failures.append(exc)
            continue
        done.append(manifest)
        warning = size_anomaly(manifest.stored_size_bytes, prev.stored_size_bytes if prev else None,
                               opts.anomaly_low, opts.anomaly_high)
        if warning:
            anomalies[db] = warning
            get_run_logger().warning("%s: size anomaly: %s", db, warning)
            emit(ANOMALY, f"charhub.database.{db}", {"backup_id": manifest.backup_id, "warning": warning})
        emit(COMPLETED, f"charhub.database.{db}",
             {"backup_id": manifest.backup_id, "database": db, "repository": cfg.repo.url,
              "size_bytes": manifest.stored_size_bytes,
              "sha256": manifest.sha256})
    backup_report(cfg.repo.url, done, anomalies)
    if failures:
        raise failures[0]
    return [backup_summary(cfg.repo.url, m) for m in done]

