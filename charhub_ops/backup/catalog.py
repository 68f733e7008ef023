"""Reading the repository: which backups exist (those with a manifest), newest first.

A manifest that cannot be read as one (invalid JSON, truncated, another schema) does not make a
backup: it is skipped with a warning naming its key (logger ``charhub_ops.backup.catalog``, or the
``warn`` callback a caller passes), so one damaged object never hides the other backups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pydantic import ValidationError

from charhub_ops.backup.manifest import (
    VERIFICATION,
    Manifest,
    Verification,
    backup_id_time,
    database_prefix,
    parse_manifest_key,
    verification_key,
)
from charhub_ops.errors import NotFoundError, StorageError
from charhub_ops.storage import Storage

__all__ = ["list_backups", "list_backups_verified", "latest_backup", "load_manifest", "backup_summary",
           "size_anomaly", "write_verification"]

Warn = Callable[[str], None]
_log = logging.getLogger(__name__)


def load_manifest(storage: Storage, key: str) -> Manifest:
    """The manifest at ``key``; StorageError if it is not a valid one, NotFoundError if missing."""
    try:
        return Manifest.model_validate_json(storage.get_bytes(key))
    except ValidationError as exc:
        raise StorageError(f"{storage.full_url(key)}: not a valid manifest: {_first_problem(exc)}") from exc


def _first_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where + ': ' if where else ''}{first['msg']}{more}"


def list_backups(storage: Storage, database: str | None = None, workers: int = 16,
                 warn: Warn | None = None) -> list[Manifest]:
    """Every complete backup (one with a valid manifest), newest first; paginates through the whole listing."""
    return [m for m, _ in list_backups_verified(storage, database, workers, with_verifications=False, warn=warn)]


def list_backups_verified(storage: Storage, database: str | None = None, workers: int = 16,
                          with_verifications: bool = True,
                          warn: Warn | None = None) -> list[tuple[Manifest, Verification | None]]:
    """Complete backups newest first, each with its latest restore-drill verdict (or None).
    Unreadable manifests are skipped and reported through ``warn`` (default: the module's logger)."""
    prefix = database_prefix(database)
    manifests, verified = [], set()
    for obj in storage.list(prefix):
        if parse_manifest_key(obj.key):
            manifests.append(obj.key)
        elif obj.key.endswith("/" + VERIFICATION):
            verified.add(obj.key.rsplit("/", 1)[0])
    if not manifests:
        return []
    with ThreadPoolExecutor(min(workers, len(manifests))) as pool:
        found = [m for m in pool.map(lambda k: _load_or_none(storage, k, warn), manifests) if m is not None]
        wanted = [m for m in found if with_verifications and _dir(m) in verified]
        verdicts = dict(zip([m.backup_id for m in wanted], pool.map(lambda m: _verification(storage, m), wanted),
                            strict=True))
    found.sort(key=lambda m: (m.started_at, m.backup_id), reverse=True)
    return [(m, verdicts.get(m.backup_id)) for m in found]


def _dir(m: Manifest) -> str:
    return verification_key(m.database, m.backup_id).rsplit("/", 1)[0]


def _verification(storage: Storage, m: Manifest) -> Verification | None:
    try:
        return Verification.model_validate_json(storage.get_bytes(verification_key(m.database, m.backup_id)))
    except (NotFoundError, ValidationError):
        return None


def write_verification(storage: Storage, database: str, verification: Verification) -> str:
    key = verification_key(database, verification.backup_id)
    storage.put_bytes(key, verification.model_dump_json(indent=2).encode())
    return key


def _load_or_none(storage: Storage, key: str, warn: Warn | None) -> Manifest | None:
    """The manifest, or None if it was deleted meanwhile (a concurrent prune) or is unreadable
    (then ``warn`` is told, naming the key). Errors reading the store itself are raised."""
    try:
        data = storage.get_bytes(key)
    except NotFoundError:
        return None
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        (warn or _log.warning)(f"skipping {storage.full_url(key)}: not a valid manifest ({_first_problem(exc)})")
        return None


def latest_backup(storage: Storage, database: str, warn: Warn | None = None) -> Manifest | None:
    """The newest complete backup of ``database``. Ids start with the UTC start second, so only the
    manifests of the newest second are read (not every manifest of the database); an unreadable
    one is skipped (``warn``) like in :func:`list_backups`."""
    keys = [(backup_id_time(parsed[1]), o.key) for o in storage.list(database_prefix(database))
            if (parsed := parse_manifest_key(o.key))]
    while keys:
        newest = max(t for t, _ in keys)
        found = [m for t, k in keys if t == newest and (m := _load_or_none(storage, k, warn)) is not None]
        if found:
            return max(found, key=lambda m: (m.started_at, m.backup_id))
        keys = [(t, k) for t, k in keys if t != newest]  # deleted meanwhile or unreadable: try the next second
    return None


def backup_summary(repository_url: str, m: Manifest, verification: Verification | None = None) -> dict:
    """The JSON shape of one backup for `backups list --json` and `backup --json`."""
    return {
        "backup_id": m.backup_id,
        "database": m.database,
        "started_at": m.started_at.isoformat().replace("+00:00", "Z"),
        "finished_at": m.finished_at.isoformat().replace("+00:00", "Z"),
        "size_bytes": m.stored_size_bytes,
        "raw_size_bytes": m.raw_size_bytes,
        "sha256": m.sha256,
        "key": f"{repository_url.rstrip('/')}/{m.dump.key}",
        "encrypted": m.encrypted,
        "tables": len(m.tables),
        "rows": sum(t.rows for t in m.tables),
        "verified_at": _iso(verification.verified_at) if verification else None,
        "verified_ok": verification.ok if verification else None,
        "label": m.label,
    }


def _iso(when) -> str:
    return when.isoformat().replace("+00:00", "Z")


def size_anomaly(current: int, previous: int | None, low: float = 0.5, high: float = 2.0) -> str | None:
    """A warning text when ``current`` is below ``low``× or above ``high``× the previous size."""
    if not previous:
        return None
    ratio = current / previous
    if ratio < low:
        return f"backup is {ratio:.0%} of the previous one ({current} vs {previous} bytes): below {low:.0%}"
    if ratio > high:
        return f"backup is {ratio:.0%} of the previous one ({current} vs {previous} bytes): above {high:.0%}"
    return None
