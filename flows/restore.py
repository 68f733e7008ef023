"""Restore a backup into a NEW database — never over an existing one — and prove the copy is complete.

Runbook: resolve configuration → select the backup → preview (plan artifact) → fetch and verify the
checksum (before any write to the database server) → create the new database → pg_restore → compare
row counts and content hashes with the manifest → (with ``replace``: swap it into the live name, see
flows/swap.py) → report. A failed check keeps the new database for inspection and fails the run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from pydantic import Field

from charhub_ops.errors import VerificationError
from charhub_ops.restore import restore_name
from flows.swap import approve, swap_flow
from tasks.notify import notify_failure
from tasks.report import check_report, restore_plan
from tasks.restore import (
    check_copy,
    create_missing_roles,
    create_target,
    ensure_absent,
    fetch_backup,
    fetch_globals,
    resolve_restore_config,
    restore_dump,
    select_backup,
)

__all__ = ["restore_flow"]


@flow(name="restore", on_failure=[notify_failure])
def restore_flow(
    repository: str | None = Field(None, description="s3://bucket/prefix or file:///path; default from settings"),
    source_database: str | None = Field(None, description="Whose backups; default: the only one in the repository"),
    backup: str = Field("latest", description="'latest' or a backup id"),
    before: datetime | None = Field(None, description="Newest complete backup at or before this time (UTC)"),
    target_database: str | None = Field(None, description="New database to create; default <db>_restore_<UTC time>"),
    replace: bool = Field(False, description="Swap the verified copy into the live name (safety backup first)"),
    docker_container: str | None = Field(None, description="Run pg_restore/psql inside this container"),
    identity_file: str | None = Field(None, description="age identity file for encrypted backups"),
    identity_secret: str | None = Field(None, description="Prefect Secret block holding the age identity"),
    database_url_secret: str | None = Field(None, description="Prefect Secret block with the server URL"),
    no_owner: bool = Field(False, description="Restore without ownership/privileges (roles may not exist)"),
    with_globals: bool = Field(False, description="Create the backup's roles the server lacks (existing roles "
                                                  "are never altered)"),
) -> dict:
    """Restore one backup; returns backup_id, database, tables, rows, ok."""
    now = datetime.now(UTC)
    cfg = resolve_restore_config(repository, docker_container, identity_file, identity_secret, database_url_secret)
    manifest = select_backup(cfg.repo, source_database, cfg.url.dbname, backup, before)
    target = target_database or restore_name(manifest.database, now)
    plan = restore_plan(manifest, target, cfg.url.redacted(), replace, cfg.url.dbname, cfg.app_containers, now)
    if replace and cfg.production:
        approve(plan)
    ensure_absent(cfg.url, cfg.container, target)
    dump, roles = fetch_backup(cfg, manifest), None
    try:
        roles = fetch_globals(cfg, manifest) if with_globals else None
        create_missing_roles(cfg.url, cfg.container, roles)
        create_target(cfg.url, cfg.container, target, manifest)
        restore_dump(cfg.url, cfg.container, manifest, dump, target, cfg.jobs, no_owner)
    finally:
        for path in (dump, roles):
            if path:
                Path(path).unlink(missing_ok=True)
    result = check_copy(cfg.url, cfg.container, target, manifest, with_hashes=True)
    check_report("Restore", manifest, target, result.ok, result.tables, result.rows, result.hashed, result.mismatches)
    if not result.ok:
        raise VerificationError(f"restored copy '{target}' differs from backup {manifest.backup_id} "
                                f"({len(result.mismatches)} problems; the database is kept for inspection): "
                                + "; ".join(result.mismatches[:3]))
    summary = {"backup_id": manifest.backup_id, "source_database": manifest.database, "database": target,
               "tables": result.tables, "rows": result.rows, "hashed_tables": result.hashed, "ok": result.ok,
               "replaced": False}
    if replace:
        summary.update(swap_flow(live=cfg.url.dbname, restored=target, repository=cfg.repo.url,
                                 docker_container=docker_container, database_url_secret=database_url_secret,
                                 approved=True))
    return summary
