"""Restore drill: prove that a backup restores, completely, into a scratch database.

Runbook: resolve configuration → pick the backup (default: the newest never verified) → fetch and verify
its checksum → restore into ``<db>_verify_<UTC time>`` → compare row counts and content hashes with the
manifest → drop the scratch database → record the verdict beside the backup → emit
``charhub.backup.verified`` or ``charhub.backup.verification-failed`` (the run then fails and notifies).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from pydantic import Field

from charhub_ops.errors import VerificationError
from charhub_ops.restore import CheckResult
from tasks.notify import emit, notify_failure
from tasks.report import check_report
from tasks.restore import (
    check_copy,
    create_target,
    drop_database,
    fetch_backup,
    record_verification,
    resolve_restore_config,
    restore_dump,
    select_backup,
)

__all__ = ["verify_flow", "VERIFIED", "VERIFICATION_FAILED"]

VERIFIED = "charhub.backup.verified"
VERIFICATION_FAILED = "charhub.backup.verification-failed"


@flow(name="verify", on_failure=[notify_failure])
def verify_flow(
    repository: str | None = Field(None, description="s3://bucket/prefix or file:///path; default from settings"),
    source_database: str | None = Field(None, description="Whose backups; default: the only one in the repository"),
    backup: str = Field("latest", description="'latest' (the newest never verified) or a backup id"),
    docker_container: str | None = Field(None, description="Run pg_restore/psql inside this container"),
    identity_file: str | None = Field(None, description="age identity file for encrypted backups"),
    identity_secret: str | None = Field(None, description="Prefect Secret block holding the age identity"),
    database_url_secret: str | None = Field(None, description="Prefect Secret block with the scratch server URL"),
) -> dict:
    """Verify one backup by restoring it; returns backup_id, ok, tables, mismatches."""
    started = datetime.now(UTC)
    cfg = resolve_restore_config(repository, docker_container, identity_file, identity_secret, database_url_secret)
    manifest = select_backup(cfg.repo, source_database, cfg.url.dbname, backup, None, unverified_first=True)
    scratch = f"{manifest.database}_verify_{started:%Y%m%d%H%M%S}"[:63]
    try:
        dump = fetch_backup(cfg, manifest)
    except VerificationError as exc:
        result = CheckResult(tables=len(manifest.tables), mismatches=[str(exc)])
    else:
        try:
            create_target(cfg.url, cfg.container, scratch, manifest)
            restore_dump(cfg.url, cfg.container, manifest, dump, scratch, cfg.jobs, no_owner=True)
            result = check_copy(cfg.url, cfg.container, scratch, manifest, with_hashes=True)
        finally:
            Path(dump).unlink(missing_ok=True)
            drop_database(cfg.url, cfg.container, scratch)
    verdict = record_verification(cfg.repo, manifest, result, started)
    check_report("Verification", manifest, scratch, result.ok, result.tables, result.rows, result.hashed,
                 result.mismatches)
    payload = {"backup_id": manifest.backup_id, "repository": cfg.repo.url, "ok": result.ok,
               "mismatches": result.mismatches[:20]}
    emit(VERIFIED if result.ok else VERIFICATION_FAILED, f"charhub.database.{manifest.database}", payload)
    summary = {"backup_id": manifest.backup_id, "database": manifest.database, "ok": result.ok,
               "tables": result.tables, "rows": result.rows, "hashed_tables": result.hashed,
               "mismatches": result.mismatches, "verified_at": verdict.verified_at.isoformat().replace("+00:00", "Z")}
    if not result.ok:
        raise VerificationError(f"backup {manifest.backup_id} failed verification: "
                                + "; ".join(result.mismatches[:3]), details=summary)
    return summary
