"""Prune a repository: the retention policy per database, plus what interrupted runs left behind.

Three steps, each usable alone (no Prefect here): :func:`scan_repository` lists the repository once;
:func:`plan_prune` is pure (an :class:`Inventory`, a policy and ``now`` in, a :class:`PrunePlan` out);
:func:`execute_prune` deletes what the plan says. :func:`prune` runs all three.

What a plan removes, per database (layout ``<db>/<backup_id>/...``, see :mod:`charhub_ops.backup.manifest`):

* backups the policy removes. Only complete backups (``manifest.json`` present) are candidates and
  count; a backup's time is its id's time (:func:`backup_id_time`), so planning 10,000 backups costs
  one listing, not 10,000 manifest reads;
* orphans: a backup prefix without a manifest whose newest object is older than ``stale_after``
  (24 h): a failed run. A younger one may be a backup in progress and is left alone;
* multipart uploads (S3/R2) initiated, and ``.partial-`` temporary files (local) modified, more than
  ``stale_after`` before ``now``.

Objects outside the layout are never touched, only counted: a bucket may hold other things.

Deletion order, so that an interrupted prune never leaves a listed backup without its data:
first one batched delete of every data object (dumps, globals, orphans, temporary files), then one
batched delete of the manifests of the removed backups whose data objects were *all* deleted.
Refusals by the store (``DeleteResult.failed``, e.g. an R2 bucket lock) become warnings, never
exceptions; a backup with a refused data object keeps its manifest. Failures of the store itself
(network, credentials) raise :class:`StorageError` before any manifest is deleted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from pydantic import BaseModel

from charhub_ops.backup.manifest import MANIFEST, backup_id_time, database_prefix, split_backup_key
from charhub_ops.errors import NotFoundError, PolicyError, StorageError
from charhub_ops.retention.policy import Candidate, RetentionPolicy, apply_policy
from charhub_ops.storage import DeleteResult, LocalStorage, S3Storage, Storage

__all__ = [
    "STALE_AFTER",
    "BackupObjects",
    "Upload",
    "Inventory",
    "KeptBackup",
    "DatabasePlan",
    "PrunePlan",
    "PruneResult",
    "scan_repository",
    "plan_prune",
    "execute_prune",
    "prune",
    "prune_to_json",
    "incomplete_uploads",
    "abort_uploads",
]

STALE_AFTER = timedelta(hours=24)
BATCH = 1000  # keys per delete_many call (S3 DeleteObjects takes at most 1,000)


class BackupObjects(BaseModel):
    """Every object under one ``<db>/<backup_id>/`` prefix; ``manifest`` is None for an incomplete run."""

    database: str
    backup_id: str
    time: datetime  # from the backup id (UTC start time)
    data: list[str]  # key of every object but the manifest (dump, globals, temporary files)
    manifest: str | None = None
    modified: datetime  # newest modification among its objects

    @property
    def name(self) -> str:
        return f"{self.database}/{self.backup_id}"


class Upload(BaseModel):
    """A multipart upload that was never completed."""

    key: str
    upload_id: str
    initiated: datetime


class Inventory(BaseModel):
    """What :func:`scan_repository` found; the only input of :func:`plan_prune` besides policy and time."""

    repository: str
    backups: list[BackupObjects]
    uploads: list[Upload] = []
    partials: dict[str, datetime] = {}  # temporary file key -> modified
    unknown: int = 0  # objects outside the layout (left alone)


class KeptBackup(BaseModel):
    backup_id: str
    time: datetime
    reasons: list[str]


class DatabasePlan(BaseModel):
    """The policy's verdict on one database; lists are newest first."""

    database: str
    keep: list[KeptBackup]
    remove: list[BackupObjects]
    in_progress: list[str]  # incomplete backups younger than stale_after: not counted, not touched


class PrunePlan(BaseModel):
    repository: str
    now: datetime
    policy: RetentionPolicy
    databases: list[DatabasePlan]
    orphans: list[BackupObjects]
    uploads: list[Upload]
    partials: list[str]
    unknown: int

    def removed_backups(self) -> list[BackupObjects]:
        return [b for d in self.databases for b in d.remove]

    def data_keys(self) -> list[str]:
        """Phase one: every object to delete except the manifests."""
        groups = [*self.removed_backups(), *self.orphans]
        return [key for b in groups for key in b.data] + list(self.partials)


class PruneResult(BaseModel):
    removed: list[str] = []  # "<db>/<backup_id>" of backups deleted, manifest included
    deleted_objects: int = 0
    aborted_uploads: int = 0
    refused: dict[str, str] = {}  # key -> the store's reason
    warnings: list[str] = []


# --- scanning (I/O) ------------------------------------------------------------------------------


def scan_repository(storage: Storage, database: str | None = None) -> Inventory:
    """List the repository (or one database's prefix) once: backups, stale-candidate uploads and
    temporary files. Reads no object. Raises StorageError."""
    prefix = database_prefix(database)
    groups: dict[tuple[str, str], dict] = {}
    unknown = 0
    for info in storage.list(prefix):
        parts = split_backup_key(info.key)
        if parts is None:
            unknown += 1
            continue
        db, backup_id, rest = parts
        group = groups.setdefault((db, backup_id), {"data": [], "manifest": None, "modified": info.modified})
        if rest == MANIFEST:
            group["manifest"] = info.key
        else:
            group["data"].append(info.key)
        group["modified"] = max(group["modified"], info.modified)
    backups = [BackupObjects(database=db, backup_id=bid, time=backup_id_time(bid), **g)
               for (db, bid), g in groups.items()]
    uploads = incomplete_uploads(storage, prefix)
    partials: dict[str, datetime] = {}
    if isinstance(storage, LocalStorage):
        partials = {o.key: o.modified for o in storage.list_partial()
                    if o.key.startswith(prefix) and split_backup_key(o.key)}
    return Inventory(repository=storage.url, backups=backups, uploads=uploads, partials=partials,
                     unknown=unknown)


# --- planning (pure) -----------------------------------------------------------------------------


def _plan_database(database: str, group: list[BackupObjects], policy: RetentionPolicy,
                   cutoff: datetime) -> tuple[DatabasePlan, list[BackupObjects]]:
    """(the database's plan, its orphans). Raises PolicyError naming the database."""
    by_id = {b.backup_id: b for b in group}
    candidates = [Candidate(b.backup_id, b.time, complete=b.manifest is not None) for b in group]
    try:
        verdict = apply_policy(candidates, policy)
    except PolicyError as exc:
        raise PolicyError(f"database {database}: {exc}") from None
    stale = [by_id[c.id] for c in verdict.ignored if by_id[c.id].modified <= cutoff]
    plan = DatabasePlan(
        database=database,
        keep=[KeptBackup(backup_id=k.id, time=k.time, reasons=k.reasons) for k in verdict.keep],
        remove=[by_id[c.id] for c in verdict.remove],
        in_progress=[c.id for c in verdict.ignored if by_id[c.id].modified > cutoff],
    )
    return plan, stale


def plan_prune(inventory: Inventory, policy: RetentionPolicy, now: datetime,
               stale_after: timedelta = STALE_AFTER) -> PrunePlan:
    """Apply ``policy`` to each database's complete backups and pick leftovers older than
    ``now - stale_after``. Pure. Raises PolicyError if the policy would remove every complete
    backup of a database (``policy.min_keep`` is honoured first)."""
    cutoff = now - stale_after
    by_database: dict[str, list[BackupObjects]] = defaultdict(list)
    for backup in inventory.backups:
        by_database[backup.database].append(backup)
    databases: list[DatabasePlan] = []
    orphans: list[BackupObjects] = []
    for database in sorted(by_database):
        plan, stale = _plan_database(database, by_database[database], policy, cutoff)
        databases.append(plan)
        orphans.extend(stale)
    return PrunePlan(
        repository=inventory.repository, now=now, policy=policy, databases=databases, orphans=orphans,
        uploads=[u for u in inventory.uploads if u.initiated <= cutoff],
        partials=sorted(k for k, modified in inventory.partials.items() if modified <= cutoff),
        unknown=inventory.unknown,
    )


# --- deleting (I/O) ------------------------------------------------------------------------------


def _delete(storage: Storage, keys: list[str], workers: int) -> DeleteResult:
    """``storage.delete_many`` over batches of 1,000 keys, ``workers`` batches at a time."""
    total = DeleteResult()
    batches = [keys[i:i + BATCH] for i in range(0, len(keys), BATCH)]
    if not batches:
        return total
    with ThreadPoolExecutor(min(workers, len(batches))) as pool:
        for result in pool.map(storage.delete_many, batches):
            total.deleted.extend(result.deleted)
            total.failed.update(result.failed)
    return total


def _refusals(keys: Iterable[str], failed: dict[str, str]) -> list[str]:
    return [f"{key} ({failed[key]})" for key in keys if key in failed]


def incomplete_uploads(storage: Storage, prefix: str = "") -> list[Upload]:
    """Multipart uploads under ``prefix`` (in the backup layout) that were never completed; [] off S3.
    Shared with the cleanup pipeline."""
    if not isinstance(storage, S3Storage):
        return []
    return [Upload(key=k, upload_id=u, initiated=t) for k, u, t in storage.list_incomplete_uploads(prefix)
            if split_backup_key(k)]


def abort_uploads(storage: S3Storage, uploads: list[Upload], result: PruneResult | None = None) -> PruneResult:
    """Abort ``uploads``; one gone meanwhile counts as aborted, a refusal is a warning. Shared with cleanup."""
    result = result if result is not None else PruneResult()
    for upload in uploads:
        try:
            storage.abort_upload(upload.key, upload.upload_id)
        except NotFoundError:
            pass  # aborted or completed meanwhile
        except StorageError as exc:
            result.refused[upload.key] = str(exc)
            result.warnings.append(f"incomplete upload {upload.key}: not aborted: {exc}")
            continue
        result.aborted_uploads += 1
    return result


def execute_prune(storage: Storage, plan: PrunePlan, *, workers: int = 8) -> PruneResult:
    """Delete what ``plan`` says: data objects, then manifests, then stale uploads (see module doc).
    Idempotent (objects already gone count as deleted). Refusals are warnings; raises StorageError."""
    result = PruneResult()
    data = _delete(storage, plan.data_keys(), workers)
    result.refused.update(data.failed)
    manifests: list[str] = []
    for backup in plan.removed_backups():
        refused = _refusals(backup.data, data.failed)
        if refused:
            result.warnings.append(f"backup {backup.name}: kept (manifest left in place): the store refused "
                                   f"to delete {', '.join(refused)}")
        elif backup.manifest:
            manifests.append(backup.manifest)
    for orphan in plan.orphans:
        if refused := _refusals(orphan.data, data.failed):
            result.warnings.append(f"orphan {orphan.name}: the store refused to delete {', '.join(refused)}")
    result.warnings.extend(f"temporary file {r}: not deleted" for r in _refusals(plan.partials, data.failed))
    done = _delete(storage, manifests, workers)
    result.refused.update(done.failed)
    attempted = set(manifests)
    for backup in plan.removed_backups():
        if backup.manifest in done.failed:
            result.warnings.append(f"backup {backup.name}: its data was deleted but the store refused to delete "
                                   f"{backup.manifest} ({done.failed[backup.manifest]}): delete it by hand")
        elif backup.manifest in attempted:
            result.removed.append(backup.name)
    result.deleted_objects = len(data.deleted) + len(done.deleted)
    if isinstance(storage, S3Storage):  # only S3 scans list uploads
        abort_uploads(storage, plan.uploads, result)
    if isinstance(storage, LocalStorage):
        storage.remove_empty_dirs()
    return result


def prune(storage: Storage, policy: RetentionPolicy, now: datetime, *, database: str | None = None,
          dry_run: bool = False, stale_after: timedelta = STALE_AFTER) -> tuple[PrunePlan, PruneResult | None]:
    """Scan, plan and (unless ``dry_run``) execute; returns the plan and the result (None when dry)."""
    plan = plan_prune(scan_repository(storage, database), policy, now, stale_after)
    return plan, None if dry_run else execute_prune(storage, plan)


def prune_to_json(plan: PrunePlan, result: PruneResult | None = None) -> dict:
    """The JSON shape of a prune (``backups prune --json``, the flow's return value); ``result`` None = dry run."""
    done = result or PruneResult()
    return {
        "repository": plan.repository,
        "dry_run": result is None,
        "policy": plan.policy.model_dump(mode="json", exclude_none=True),
        "databases": [{
            "database": d.database,
            "keep": [{"id": k.backup_id, "time": k.time.isoformat(), "reasons": k.reasons} for k in d.keep],
            "remove": [b.backup_id for b in d.remove],
            "in_progress": d.in_progress,
        } for d in plan.databases],
        "orphans": [b.name for b in plan.orphans],
        "incomplete_uploads": [u.key for u in plan.uploads],
        "partial_files": plan.partials,
        "unknown_objects": plan.unknown,
        "removed": done.removed,
        "deleted_objects": done.deleted_objects,
        "aborted_uploads": done.aborted_uploads,
        "refused": done.refused,
        "warnings": done.warnings,
    }
