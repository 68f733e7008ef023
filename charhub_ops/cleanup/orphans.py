"""Object storage cleanup: stale multipart uploads in the backup repository, orphaned media in the media bucket.

Stale uploads: prune's own code (:func:`charhub_ops.retention.prune.incomplete_uploads`,
:func:`~charhub_ops.retention.prune.abort_uploads`), uploads initiated more than a day ago.

Media orphans (CharHub leaves a deleted character's images in R2): an object under a scanned prefix is an
orphan when no row of the configured (table, column) pairs **of the database that owns the prefix**
references it (:class:`References`; ``prod/`` is judged against the production database, ``dev/`` only
against a development database named for it; a prefix no database owns is never scanned and is listed
in ``plan.not_scanned``). What counts as a reference (every key in any text, array element or JSON
string, percent-decoded) is :func:`charhub_ops.cleanup.media_refs.references_in`. Objects younger than
the grace period are never candidates (uploads in flight).

Safety: when the orphans under a prefix are more than ``max_orphan_share`` of the objects scanned there,
the plan raises PolicyError (the reference list is probably wrong) and nothing is acted on. The act looks
each batch of ``RECHECK_BATCH`` keys up again immediately before moving or deleting it; an object
referenced by then is skipped and listed in ``result.skipped_referenced`` (quarantine copies a batch
first, then re-checks, then deletes the originals in one request: the slow copying is not part of the
gap). Modes: ``dry-run`` (the default: report only), ``quarantine`` (move under
``quarantine/<date>/<key>``, delete those older than ``quarantine_days``), ``delete``. At most
``max_objects`` objects are acted on per run.
"""


from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Literal

import psycopg
from pydantic import BaseModel

from charhub_ops.cleanup.media_refs import MediaReference, parse_references, referenced_keys
from charhub_ops.errors import ConfigError, PolicyError, StorageError
from charhub_ops.retention.prune import STALE_AFTER, PruneResult, Upload, abort_uploads, incomplete_uploads
from charhub_ops.storage import ObjectInfo, Storage

__all__ = ["MediaReference", "OrphanOptions", "OrphanPlan", "OrphanResult", "parse_references", "References",
           "parse_owners", "plan_orphans", "execute_orphans", "QUARANTINE", "RECHECK_BATCH", "stale_uploads",
           "abort_stale_uploads"]

QUARANTINE = "quarantine/"
RECHECK_BATCH = 1000  # keys re-checked at once: one streamed scan per column, then one delete request
Mode = Literal["dry-run", "quarantine", "delete"]


class References:
    """Who references media: each owned prefix's database connection and the reference columns."""

    def __init__(self, conns: Mapping[str, psycopg.Connection], refs: list[MediaReference]) -> None:
        self.conns, self.refs = dict(conns), refs

    def owns(self, prefix: str) -> bool:
        return prefix in self.conns

    def referenced(self, prefix: str, keys: list[str]) -> set[str]:
        """Which of ``keys`` (all under ``prefix``) a row of the prefix's own database references."""
        return referenced_keys(self.conns[prefix], self.refs, keys, [prefix])


class OrphanOptions(BaseModel):
    prefixes: list[str]
    grace: timedelta
    max_objects: int
    mode: Mode = "dry-run"
    quarantine_days: int = 30
    max_orphan_share: float = 0.2  # more orphans than this share of a prefix's objects: stop


class OrphanPlan(BaseModel):
    scanned: int = 0
    referenced: int = 0
    young: int = 0
    candidates: list[ObjectInfo] = []  # orphans to act on (at most max_objects)
    over_cap: int = 0  # orphans left for the next run
    expired_quarantine: list[ObjectInfo] = []  # quarantined longer than quarantine_days
    not_scanned: list[str] = []  # prefixes no database owns: never listed, never acted on

    @property
    def candidate_bytes(self) -> int:
        return sum(o.size for o in self.candidates)


class OrphanResult(BaseModel):
    quarantined: list[str] = []
    deleted: list[str] = []
    skipped_referenced: list[str] = []  # referenced at the re-check just before acting: left in place
    bytes_quarantined: int = 0
    bytes_freed: int = 0
    warnings: list[str] = []


_ENTRY = re.compile(r",\s*(?=[^,=\s]*/=)")  # a comma that starts the next 'prefix/=' (URLs may hold commas)


def parse_owners(text: str | None, prefixes: list[str]) -> dict[str, str]:
    """``prod/=DATABASE_URL,dev/=<URL or Secret block>`` (setting cleanup_media_databases) as {prefix: owner};
    unset: ``{"prod/": "DATABASE_URL"}`` when ``prod/`` is scanned. Errors name the prefix, never the owner."""
    if text is None:
        return {"prod/": "DATABASE_URL"} if "prod/" in prefixes else {}
    owners: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in _ENTRY.split(text.strip()))):
        prefix, sep, owner = entry.partition("=")
        prefix, owner = prefix.strip(), owner.strip()
        if not sep or not prefix.endswith("/") or not owner:
            raise ConfigError("cleanup_media_databases: each entry is prefix/=owner (DATABASE_URL, a postgresql:// "
                              "URL or a Secret block name), comma-separated")
        if prefix not in prefixes:
            raise ConfigError(f"cleanup_media_databases: {prefix} is not in cleanup_media_prefixes "
                              f"({', '.join(prefixes)})")
        owners[prefix] = owner
    return owners


def _check_share(prefix: str, orphans: int, scanned: int, share: float) -> None:
    if scanned and orphans > share * scanned:
        raise PolicyError(
            f"media orphans: {orphans} of {scanned} objects under {prefix} ({orphans / scanned:.0%}) look orphaned, "
            f"more than cleanup_media_max_orphan_share ({share:.0%}): the reference list "
            f"(cleanup_media_references, cleanup_media_databases) is probably wrong; nothing was moved or deleted")


def _quarantine_day(key: str) -> date | None:
    try:
        return date.fromisoformat(key.removeprefix(QUARANTINE).split("/", 1)[0])
    except ValueError:
        return None


def _scan_prefix(storage: Storage, references: References, prefix: str, opts: OrphanOptions, now: datetime,
                 plan: OrphanPlan) -> list[ObjectInfo]:
    """List one prefix, look its old-enough keys up in its own database; returns its orphans (all of them)."""
    scanned, old = 0, []
    for info in storage.list(prefix):
        scanned += 1
        if info.modified > now - opts.grace:
            plan.young += 1
        else:
            old.append(info)
    found = references.referenced(prefix, [o.key for o in old])
    orphans = [o for o in old if o.key not in found]
    _check_share(prefix, len(orphans), scanned, opts.max_orphan_share)
    plan.scanned += scanned
    plan.referenced += len(old) - len(orphans)
    return orphans


def plan_orphans(storage: Storage, references: References, opts: OrphanOptions, now: datetime) -> OrphanPlan:
    """List each owned prefix once, look the old-enough keys up in its database, pick the orphans (capped).
    Raises PolicyError when a prefix's orphans exceed ``max_orphan_share`` of its objects."""
    plan = OrphanPlan(not_scanned=[p for p in opts.prefixes if not references.owns(p)])
    orphans = [o for p in opts.prefixes if references.owns(p) for o in _scan_prefix(storage, references, p, opts,
                                                                                     now, plan)]
    plan.candidates, plan.over_cap = orphans[:opts.max_objects], max(0, len(orphans) - opts.max_objects)
    if opts.mode == "quarantine":
        limit = now.date() - timedelta(days=opts.quarantine_days)
        plan.expired_quarantine = [o for o in storage.list(QUARANTINE)
                                   if (day := _quarantine_day(o.key)) is not None and day <= limit]
    return plan


def _target(info: ObjectInfo, now: datetime) -> str:
    return f"{QUARANTINE}{now.date().isoformat()}/{info.key}"


def _copy(storage: Storage, objects: list[ObjectInfo], now: datetime, result: OrphanResult) -> list[ObjectInfo]:
    """Copy each object under quarantine/ through a stream (the storage contract has no server-side copy);
    returns those copied. Nothing is deleted here: a copy is harmless."""
    copied = []
    for info in objects:
        try:
            with storage.open(info.key) as source:
                storage.put_stream(_target(info, now), source, expected_size=info.size)
        except StorageError as exc:
            result.warnings.append(f"{info.key}: not quarantined: {exc}")
            continue
        copied.append(info)
    return copied


def _quarantine(storage: Storage, batch: list[ObjectInfo], referenced: set[str], now: datetime,
                result: OrphanResult) -> None:
    """After the re-check: delete the originals still orphaned (their copies stay in quarantine) and the
    copies of those referenced by now (their originals stay)."""
    originals = storage.delete_many([o.key for o in batch if o.key not in referenced])
    moved = set(originals.deleted)
    result.quarantined.extend(o.key for o in batch if o.key in moved)
    result.bytes_quarantined += sum(o.size for o in batch if o.key in moved)
    result.warnings.extend(f"{key}: not quarantined (a copy stays): {reason}"
                           for key, reason in originals.failed.items())
    copies = [_target(o, now) for o in batch if o.key in referenced]
    if copies:
        storage.delete_many(copies)


def _owner(key: str, references: References, opts: OrphanOptions) -> str | None:
    return next((p for p in opts.prefixes if key.startswith(p) and references.owns(p)), None)


def _referenced_now(batch: list[ObjectInfo], references: References, opts: OrphanOptions,
                    result: OrphanResult) -> set[str]:
    """The batch's keys a row references now, looked up again in each prefix's database (a key under no
    owned prefix counts as referenced: it is never acted on); listed in ``result.skipped_referenced``."""
    owners = {o.key: _owner(o.key, references, opts) for o in batch}
    found = {key for key, owner in owners.items() if owner is None}
    for prefix in {owner for owner in owners.values() if owner is not None}:
        found |= references.referenced(prefix, [key for key, owner in owners.items() if owner == prefix])
    result.skipped_referenced.extend(o.key for o in batch if o.key in found)
    return found


def execute_orphans(storage: Storage, plan: OrphanPlan, opts: OrphanOptions, now: datetime,
                    references: References) -> OrphanResult:
    """Quarantine or delete the plan's candidates (nothing in ``dry-run``) in batches of ``RECHECK_BATCH``. Each
    batch's keys are looked up again right before its one delete request (in quarantine mode after the batch
    is copied, so the copying time is not a gap); then the old quarantine expires."""
    result = OrphanResult()
    if opts.mode == "dry-run":
        return result
    for i in range(0, len(plan.candidates), RECHECK_BATCH):
        batch = plan.candidates[i:i + RECHECK_BATCH]
        if opts.mode == "quarantine":
            batch = _copy(storage, batch, now, result)
            _quarantine(storage, batch, _referenced_now(batch, references, opts, result), now, result)
        else:
            referenced = _referenced_now(batch, references, opts, result)
            _delete(storage, [o for o in batch if o.key not in referenced], result)
    if opts.mode == "quarantine":
        _delete(storage, plan.expired_quarantine, result)
    return result


def _delete(storage: Storage, objects: list[ObjectInfo], result: OrphanResult) -> None:
    if not objects:
        return
    done = storage.delete_many([o.key for o in objects])
    sizes = {o.key: o.size for o in objects}
    result.deleted.extend(done.deleted)
    result.bytes_freed += sum(sizes.get(k, 0) for k in done.deleted)
    result.warnings.extend(f"{key}: not deleted: {reason}" for key, reason in done.failed.items())


# --- stale multipart uploads in the backup repository: prune's code ------------------------------------

def stale_uploads(storage: Storage, now: datetime, stale_after: timedelta = STALE_AFTER) -> list[Upload]:
    """Incomplete uploads (backup layout) initiated at least ``stale_after`` (a day) before ``now``."""
    return [u for u in incomplete_uploads(storage) if u.initiated <= now - stale_after]


def abort_stale_uploads(storage: Storage, uploads: list[Upload]) -> PruneResult:
    return abort_uploads(storage, uploads) if uploads else PruneResult()
