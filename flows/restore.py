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
from typing import Annotated

from prefect import flow
from pydantic import Field

from charhub_ops.errors import VerificationError
from charhub_ops.restore.engine import restore_name
from flows.params import REPOSITORY_HELP, Access, Decryption, Repository, RestoreSource, RestoreTarget, described
from flows.swap import approve, swap_databases
from tasks.common import run_settings
from tasks.notify import notify_failure
from tasks.restore import (
    RestoreConfig,
    check_copy,
    check_report,
    choose_restore_mode,
    create_missing_roles,
    ensure_absent,
    fetch_backup,
    fetch_globals,
    remove_work_files,
    resolve_restore_config,
    restore_new_database,
    restore_plan,
    select_backup,
)

__all__ = ["restore_flow", "restore_config"]


def restore_config(repository: str | None, access: Access, decryption: Decryption) -> RestoreConfig:
    """The first step of the restore and verify flows: the run's settings (its parameters over the
    environment, read once) resolved into the configuration every later step takes."""
    settings = run_settings(repository=repository, docker_container=access.docker_container,
                            age_identity_file=decryption.identity_file)
    return resolve_restore_config(settings, decryption.identity_secret, access.database_url_secret)


@flow(name="restore", on_failure=[notify_failure])
@described
def restore_flow(
    repository: Annotated[Repository | None, Field(description=REPOSITORY_HELP)] = None,
    source: Annotated[RestoreSource, Field(description="Which backup to restore")] = RestoreSource(),
    target: Annotated[RestoreTarget, Field(description="The new database, and whether it replaces the "
                                                               "live one")] = RestoreTarget(),
    access: Annotated[Access, Field(description="How to reach the database server")] = Access(),
    decryption: Annotated[Decryption, Field(description="For encrypted backups")] = Decryption(),
) -> dict:
    """Restore one backup; returns backup_id, database, tables, rows, ok."""
    now = datetime.now(UTC)
    cfg = restore_config(repository, access, decryption)
    manifest = select_backup(cfg.repo, source.source_database, cfg.url.dbname, source.backup, source.before)
    name = target.target_database or restore_name(manifest.database, now)
    plan = restore_plan(manifest, name, cfg.url.redacted(), target.replace, cfg.url.dbname, cfg.app_containers, now)
    decision = approve(plan) if target.replace and cfg.production else None
    ensure_absent(cfg.url, cfg.container, name)
    dump = fetch_backup(cfg, manifest) if choose_restore_mode(cfg, manifest) == "file" else None
    roles = None
    try:
        roles = fetch_globals(cfg, manifest) if target.with_globals else None
        create_missing_roles(cfg.url, cfg.container, roles)
        restore_new_database(cfg, manifest, name, target.no_owner, dump)
    finally:
        remove_work_files(dump, roles)
    result = check_copy(cfg.url, cfg.container, name, manifest, with_hashes=True)
    check_report("Restore", manifest, name, result.ok, result.tables, result.rows, result.hashed, result.mismatches,
                 decision.line() if decision else None)
    if not result.ok:
        raise VerificationError(f"restored copy '{name}' differs from backup {manifest.backup_id} "
                                f"({len(result.mismatches)} problems; the database is kept for inspection): "
                                + "; ".join(result.mismatches[:3]))
    summary = {"backup_id": manifest.backup_id, "source_database": manifest.database, "database": name,
               "tables": result.tables, "rows": result.rows, "hashed_tables": result.hashed, "ok": result.ok,
               "replaced": False, "approval": decision.model_dump(mode="json") if decision else None}
    if target.replace:  # approved above (production) with the whole plan: the swap asks nothing more
        summary.update(swap_databases(cfg, live=cfg.url.dbname, restored=name, repository=cfg.repo.url,
                                      access=access))
    return summary
