"""Restore a backup into a NEW database — never over an existing one — and prove the copy is complete.

Runbook: resolve configuration → select the backup → preview (plan artifact) → choose the mode →
create the new database and pg_restore into it — streamed (GET → SHA-256 → age → zstd → pg_restore stdin;
the checksum is checked at the end of the object, before the restore is accepted) or from a verified file
in the work dir (checksum before any write to the server, then pg_restore -j) → compare row counts and
content hashes with the manifest → (with ``replace``: swap it into the live name, see flows/swap.py) →
report. A failed restore (bad checksum, cut download, pg_restore error) drops the new database; a failed
check keeps it for inspection and fails the run. The live database is only touched by the swap.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from pydantic import Field

from charhub_ops.errors import VerificationError
from charhub_ops.restore import restore_name
from flows.swap import approve, swap_flow
from tasks.notify import notify_failure
from tasks.report import check_report, restore_plan
from tasks.restore import (
    check_copy,
    choose_restore_mode,
    create_missing_roles,
    ensure_absent,
    fetch_backup,
    fetch_globals,
    remove_work_files,
    resolve_restore_config,
    restore_new_database,
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
    dump = fetch_backup(cfg, manifest) if choose_restore_mode(cfg, manifest) == "file" else None
    roles = None
    try:
        roles = fetch_globals(cfg, manifest) if with_globals else None
        create_missing_roles(cfg.url, cfg.container, roles)
        restore_new_database(cfg, manifest, target, no_owner, dump)
    finally:
        remove_work_files(dump, roles)
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
