"""Physical backups with pgBackRest, orchestrated like the logical ones (issue 19).

``pitr-backup`` — runbook: resolve configuration (settings + parameters, checked: the repository is set; the
form's ``kind`` is checked by the server) → act (``pgbackrest backup`` under the lock ``pitr-<stanza>``; the core
refuses a missing stanza with one line naming ``pitr setup``) → report: ``info`` right after, in the same task;
the artifact ``pitr-backup-report`` (label, type, duration, sizes, repository size, WAL range; a note when a
diff/incr without a full became a full) and ``charhub.pitr.backup.completed`` on ``charhub.pitr.<stanza>``
with the same figures. Any failure after the settings were read emits ``charhub.pitr.backup.failed`` (the
error's one line; a transient one only after the task's retries) and fails the run, which notifies.
Deployments ``pitr-full`` (Sundays) and ``pitr-diff`` (the other days), prefect.yaml.

``pitr-expire`` — runbook: resolve → the retention mapping (keep_weekly/keep_daily → repo1-retention-*,
logged and in the artifact) → ``info`` → ``pgbackrest expire`` (``--dry-run`` with ``dry_run``) → ``info``
→ artifact ``pitr-expire-report``: the mapping and the backups that went (labels listed before, not
after). Deployment ``pitr-expire``: after each ``charhub.pitr.backup.completed``.

The drills and restores (``pitr-verify``, ``pitr-restore``, ``pitr-recover-table``) are in flows/pitr_restore.py.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from charhub_ops.pitr.summary import (
    backup_markdown,
    backup_notes,
    backup_payload,
    expire_markdown,
    expired,
    resource_id,
)
from flows.params import Access, described
from flows.pitr_params import KIND_HELP, PitrKind
from tasks.common import run_settings
from tasks.notify import emit, notify_failure
from tasks.pitr import (
    pitr_artifact,
    pitr_backup,
    pitr_expire,
    pitr_info,
    resolve_pitr_config,
)

__all__ = ["pitr_backup_flow", "pitr_expire_flow", "COMPLETED", "FAILED", "ACCESS_HELP", "one_line"]

COMPLETED = "charhub.pitr.backup.completed"
FAILED = "charhub.pitr.backup.failed"
ACCESS_HELP = ("How to reach the database server: with a container, pgBackRest runs inside it; the URL (setting or "
               "Secret block) is the live database the drill and recover-table read")


def one_line(exc: BaseException) -> str:
    """The error as one line for an event (charhub-ops errors carry no secret; see charhub_ops/errors.py)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:500]


@flow(name="pitr-backup", on_failure=[notify_failure])
@described
def pitr_backup_flow(
    kind: Annotated[PitrKind, Field(description=KIND_HELP)] = "full",
    access: Annotated[Access, Field(description=ACCESS_HELP)] = Access(),
) -> dict:
    """One pgBackRest backup of the cluster; returns the figures of charhub.pitr.backup.completed."""
    settings = run_settings(docker_container=access.docker_container)
    subject = resource_id(settings.pitr.stanza)
    try:
        cfg = resolve_pitr_config(settings, access.database_url_secret)
        backup, stanza = pitr_backup(cfg, kind)
    except Exception as exc:  # every failure is announced once, then the run fails with it
        emit(FAILED, subject, {"stanza": settings.pitr.stanza, "repository": settings.pitr.repository,
                               "requested": kind, "error": one_line(exc)})
        raise
    payload, notes = backup_payload(backup, stanza, cfg.repository, kind), backup_notes(kind, backup)
    for note in notes:
        get_run_logger().warning("%s", note)
    pitr_artifact("pitr-backup-report", backup_markdown(payload, notes), "charhub-ops pgBackRest backup")
    emit(COMPLETED, subject, payload)
    return payload


@flow(name="pitr-expire", on_failure=[notify_failure])
@described
def pitr_expire_flow(
    dry_run: Annotated[bool, Field(description="Show what the retention would expire; expire nothing")] = False,
    access: Annotated[Access, Field(description=ACCESS_HELP)] = Access(),
) -> dict:
    """Apply pgBackRest's retention (mapped from keep_weekly / keep_daily); returns the mapping and what went."""
    settings = run_settings(docker_container=access.docker_container)
    cfg = resolve_pitr_config(settings, access.database_url_secret)
    before = pitr_info(cfg)
    result = pitr_expire(cfg, dry_run)
    after = before if dry_run else pitr_info(cfg)
    gone = [b for b in before.backups if b.label in set(result.expired)]
    if not dry_run:  # what info no longer lists, whatever the log said
        gone = expired(before, after)
    kept = [b for b in after.backups if b not in gone]
    mapping = result.mapping.options()
    pitr_artifact("pitr-expire-report", expire_markdown(cfg.stanza, cfg.repository, mapping, gone, kept,
                                                        after.wal_min, dry_run), "charhub-ops pgBackRest expire")
    return {"stanza": cfg.stanza, "repository": cfg.repository, "dry_run": dry_run, "retention": mapping,
            "explanation": list(result.mapping.explanation), "expired": [b.label for b in gone],
            "kept": [b.label for b in kept], "archive_removed": [list(r) for r in result.archive_ranges]}
