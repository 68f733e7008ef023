"""Restore drill: prove that a backup restores, completely, into a scratch database.

Runbook: resolve configuration → pick the backup (default: the newest never verified) → choose the mode
→ restore into ``<db>_verify_<UTC time>`` (streamed, checksum at the end of the object; or from a
verified file) → compare row counts and content hashes with the manifest → drop the scratch database
(only if this run created it) → record the verdict beside the backup → emit ``charhub.backup.verified``
or ``charhub.backup.verification-failed`` (the run then fails and notifies).

Which failures brand the backup: a verdict (``ok: false``) is recorded when the backup itself was shown
bad (checksum, truncation, wrong key, corrupt data, an object missing, rows or hashes that differ) or
the server refused to restore it (a permanent database error from CREATE DATABASE or pg_restore). A
transient error (the repository or server unreachable after the task's retries) and a configuration
problem (no identity, a full work dir, a missing container) fail the run and emit the failed event with
``verdict_recorded: false`` but record nothing: the backup was not shown bad, and the next drill tries it
again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from prefect import flow
from pydantic import Field

from charhub_ops.backup.manifest import Manifest
from charhub_ops.errors import DatabaseError, NotFoundError, OpsError, VerificationError
from charhub_ops.restore.engine import CheckResult
from flows.params import REPOSITORY_HELP, Access, Decryption, Repository, VerifySource, described
from flows.restore import restore_config
from tasks.common import is_transient
from tasks.locks import database_lock
from tasks.notify import emit, notify_failure
from tasks.restore import (
    RestoreConfig,
    check_copy,
    check_report,
    choose_restore_mode,
    drop_database,
    fetch_backup,
    record_verification,
    remove_work_files,
    restore_new_database,
    select_backup,
)

__all__ = ["verify_flow", "blames_backup", "VERIFIED", "VERIFICATION_FAILED"]

VERIFIED = "charhub.backup.verified"
VERIFICATION_FAILED = "charhub.backup.verification-failed"


@flow(name="verify", on_failure=[notify_failure])
@described
def verify_flow(
    repository: Annotated[Repository | None, Field(description=REPOSITORY_HELP)] = None,
    source: Annotated[VerifySource, Field(description="Which backup to verify")] = VerifySource(),
    access: Annotated[Access, Field(description="How to reach the SCRATCH server the drill restores into "
                                                 "(deployments: the Secret block charhub-ops-scratch-url)")] = Access(),
    decryption: Annotated[Decryption, Field(description="For encrypted backups")] = Decryption(),
) -> dict:
    """Verify one backup by restoring it; returns backup_id, ok, tables, mismatches."""
    started = datetime.now(UTC)
    cfg = restore_config(repository, access, decryption)
    manifest = select_backup(cfg.repo, source.source_database, cfg.url.dbname, source.backup, None,
                             unverified_first=True)
    scratch = f"{manifest.database}_verify_{started:%Y%m%d%H%M%S}"[:63]
    subject = f"charhub.database.{manifest.database}"
    try:
        with database_lock(manifest.database):
            result = _drill(cfg, manifest, scratch)
    except OpsError as exc:
        if not blames_backup(exc):
            emit(VERIFICATION_FAILED, subject, {"backup_id": manifest.backup_id, "repository": cfg.repo.url,
                                                "ok": False, "verdict_recorded": False, "error": str(exc)[:500]})
            raise
        result = CheckResult(tables=len(manifest.tables), mismatches=[str(exc)])
    verdict = record_verification(cfg.repo, manifest, result, started)
    check_report("Verification", manifest, scratch, result.ok, result.tables, result.rows, result.hashed,
                 result.mismatches)
    payload = {"backup_id": manifest.backup_id, "repository": cfg.repo.url, "ok": result.ok,
               "verdict_recorded": True, "mismatches": result.mismatches[:20]}
    emit(VERIFIED if result.ok else VERIFICATION_FAILED, subject, payload)
    summary = {"backup_id": manifest.backup_id, "database": manifest.database, "ok": result.ok,
               "tables": result.tables, "rows": result.rows, "hashed_tables": result.hashed,
               "mismatches": result.mismatches, "verified_at": verdict.verified_at.isoformat().replace("+00:00", "Z")}
    if not result.ok:
        raise VerificationError(f"backup {manifest.backup_id} failed verification: "
                                + "; ".join(result.mismatches[:3]), details=summary)
    return summary


def _drill(cfg: RestoreConfig, manifest: Manifest, scratch: str) -> CheckResult:
    """Restore into ``scratch`` and compare; the scratch database exists only between a successful
    restore (restore-new-database drops what it created when it fails) and its drop here."""
    dump = fetch_backup(cfg, manifest) if choose_restore_mode(cfg, manifest) == "file" else None
    try:
        restore_new_database(cfg, manifest, scratch, True, dump)
    finally:
        remove_work_files(dump)
    try:
        return check_copy(cfg.url, cfg.container, scratch, manifest, with_hashes=True)
    finally:
        drop_database(cfg.url, cfg.container, scratch)


def blames_backup(exc: OpsError) -> bool:
    """True when ``exc`` shows the backup bad or unrestorable (a verdict is recorded), see the docstring."""
    if is_transient(exc):
        return False
    return isinstance(exc, VerificationError | NotFoundError | DatabaseError)
