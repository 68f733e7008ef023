"""Object storage cleanup: stale multipart uploads in the backup repository, orphaned media in the media bucket.

Stale uploads: prune's own code (:func:`charhub_ops.prune.incomplete_uploads`,
:func:`~charhub_ops.prune.abort_uploads`), uploads initiated more than a day ago.

Media orphans (CharHub leaves a deleted character's images in R2): an object under a configured prefix
(``prod/``, ``dev/``) is an orphan when no row of the configured (table, column) pairs references it. A
column may hold the key or a URL ending in it (``https://cdn…/prod/x.png?v=2``): the key is taken from
the value from the first configured prefix on. Lookups are batched: one query per reference and batch of
keys (``= ANY``), never one per object. Objects younger than the grace period are never candidates
(uploads in flight). Modes: ``dry-run`` (the default: report only), ``quarantine`` (move under
``quarantine/<date>/<key>``, delete those older than ``quarantine_days``), ``delete``. At most
``max_objects`` objects are acted on per run.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Literal

import psycopg
from psycopg import sql
from pydantic import BaseModel

from charhub_ops.errors import ConfigError, StorageError
from charhub_ops.pgerrors import db_errors
from charhub_ops.prune import STALE_AFTER, PruneResult, Upload, abort_uploads, incomplete_uploads
from charhub_ops.storage import ObjectInfo, Storage

__all__ = ["MediaReference", "OrphanOptions", "OrphanPlan", "OrphanResult", "parse_references", "referenced_keys",
           "plan_orphans", "execute_orphans", "QUARANTINE", "stale_uploads", "abort_stale_uploads"]

QUARANTINE = "quarantine/"
LOOKUP_BATCH = 5000
Mode = Literal["dry-run", "quarantine", "delete"]


class MediaReference(BaseModel):
    schema_name: str = "public"
    table: str
    column: str

    def __str__(self) -> str:
        return f"{self.table}.{self.column}"


def parse_references(items: list[str]) -> list[MediaReference]:
    """``Table.column`` or ``schema.Table.column`` items (setting cleanup_media_references)."""
    refs = []
    for item in items:
        parts = item.split(".")
        if len(parts) not in (2, 3) or not all(parts):
            raise ConfigError(f"cleanup_media_references: {item!r} is not Table.column or schema.Table.column")
        refs.append(MediaReference(schema_name=parts[0], table=parts[1], column=parts[2]) if len(parts) == 3
                    else MediaReference(table=parts[0], column=parts[1]))
    if not refs:
        raise ConfigError("cleanup_media_references: not set; without references every media object would look "
                          "orphaned (list the Table.column pairs that hold media keys or URLs)")
    return refs


class OrphanOptions(BaseModel):
    prefixes: list[str]
    grace: timedelta
    max_objects: int
    mode: Mode = "dry-run"
    quarantine_days: int = 30


class OrphanPlan(BaseModel):
    scanned: int = 0
    referenced: int = 0
    young: int = 0
    candidates: list[ObjectInfo] = []  # orphans to act on (at most max_objects)
    over_cap: int = 0  # orphans left for the next run
    expired_quarantine: list[ObjectInfo] = []  # quarantined longer than quarantine_days

    @property
    def candidate_bytes(self) -> int:
        return sum(o.size for o in self.candidates)


class OrphanResult(BaseModel):
    quarantined: list[str] = []
    deleted: list[str] = []
    bytes_quarantined: int = 0
    bytes_freed: int = 0
    warnings: list[str] = []


def _key_pattern(prefixes: list[str]) -> str:
    alternatives = "|".join(re.escape(p) for p in prefixes)
    return f"(?:^|/)((?:{alternatives})[^?#]*)"


def referenced_keys(conn: psycopg.Connection, refs: list[MediaReference], keys: list[str],
                    prefixes: list[str]) -> set[str]:
    """Which of ``keys`` some row references (as the key itself or a URL ending in it); batched."""
    found: set[str] = set()
    pattern = _key_pattern(prefixes)
    for ref in refs:
        statement = sql.SQL("SELECT DISTINCT k FROM (SELECT substring({col}::text FROM %(p)s) AS k FROM {s}.{t} "
                            "WHERE {col} IS NOT NULL) r WHERE k = ANY(%(keys)s)").format(
            col=sql.Identifier(ref.column), s=sql.Identifier(ref.schema_name), t=sql.Identifier(ref.table))
        with db_errors(f"look up media references in {ref}"):
            for i in range(0, len(keys), LOOKUP_BATCH):
                rows = conn.execute(statement, {"p": pattern, "keys": keys[i:i + LOOKUP_BATCH]}).fetchall()
                found.update(r[0] for r in rows)
    return found


def _quarantine_day(key: str) -> date | None:
    try:
        return date.fromisoformat(key.removeprefix(QUARANTINE).split("/", 1)[0])
    except ValueError:
        return None


def plan_orphans(storage: Storage, conn: psycopg.Connection, refs: list[MediaReference], opts: OrphanOptions,
                 now: datetime) -> OrphanPlan:
    """List the prefixes once, look the old-enough keys up in batches, pick the orphans (capped)."""
    plan = OrphanPlan()
    old: list[ObjectInfo] = []
    for prefix in opts.prefixes:
        for info in storage.list(prefix):
            plan.scanned += 1
            if info.modified > now - opts.grace:
                plan.young += 1
            else:
                old.append(info)
    found = referenced_keys(conn, refs, [o.key for o in old], opts.prefixes)
    orphans = [o for o in old if o.key not in found]
    plan.referenced = len(old) - len(orphans)
    plan.candidates, plan.over_cap = orphans[:opts.max_objects], max(0, len(orphans) - opts.max_objects)
    if opts.mode == "quarantine":
        limit = now.date() - timedelta(days=opts.quarantine_days)
        plan.expired_quarantine = [o for o in storage.list(QUARANTINE)
                                   if (day := _quarantine_day(o.key)) is not None and day <= limit]
    return plan


def _move(storage: Storage, info: ObjectInfo, target: str) -> None:
    """Copy through a stream (the storage contract has no server-side copy), then delete the original."""
    with storage.open(info.key) as source:
        storage.put_stream(target, source, expected_size=info.size)
    result = storage.delete_many([info.key])
    if result.failed:
        raise StorageError(f"delete {info.key}: {result.failed[info.key]}")


def execute_orphans(storage: Storage, plan: OrphanPlan, opts: OrphanOptions, now: datetime) -> OrphanResult:
    """Quarantine or delete the plan's candidates (nothing in ``dry-run``); expire the old quarantine."""
    result = OrphanResult()
    if opts.mode == "quarantine":
        for info in plan.candidates:
            target = f"{QUARANTINE}{now.date().isoformat()}/{info.key}"
            try:
                _move(storage, info, target)
            except StorageError as exc:
                result.warnings.append(f"{info.key}: not quarantined: {exc}")
                continue
            result.quarantined.append(info.key)
            result.bytes_quarantined += info.size
        _delete(storage, plan.expired_quarantine, result)
    elif opts.mode == "delete":
        _delete(storage, plan.candidates, result)
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
