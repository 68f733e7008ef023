"""Reading the repository: which backups exist (those with a manifest), newest first."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pydantic import ValidationError

from charhub_ops.errors import NotFoundError, StorageError
from charhub_ops.manifest import (
    VERIFICATION,
    Manifest,
    Verification,
    backup_id_time,
    database_prefix,
    parse_manifest_key,
    verification_key,
)
from charhub_ops.storage import Storage

__all__ = ["list_backups", "list_backups_verified", "latest_backup", "load_manifest", "backup_summary",
           "size_anomaly", "write_verification"]


def load_manifest(storage: Storage, key: str) -> Manifest:
    try:
        return Manifest.model_validate_json(storage.get_bytes(key))
    except ValidationError as exc:
        raise StorageError(f"{storage.full_url(key)}: not a valid manifest: {exc.error_count()} errors") from exc


def list_backups(storage: Storage, database: str | None = None, workers: int = 16) -> list[Manifest]:
    """Every complete backup (one with a manifest), newest first; paginates through the whole listing."""
    return [m for m, _ in list_backups_verified(storage, database, workers, with_verifications=False)]


def list_backups_verified(storage: Storage, database: str | None = None, workers: int = 16,
                          with_verifications: bool = True) -> list[tuple[Manifest, Verification | None]]:
    """Complete backups newest first, each with its latest restore-drill verdict (or None)."""
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
        found = [m for m in pool.map(lambda k: _load_or_none(storage, k), manifests) if m is not None]
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


def _load_or_none(storage: Storage, key: str) -> Manifest | None:
    try:
        return load_manifest(storage, key)
    except NotFoundError:  # deleted between list and get (a concurrent prune)
        return None


def latest_backup(storage: Storage, database: str) -> Manifest | None:
    """The newest complete backup of ``database``. Ids start with the UTC start second, so only the
    manifests of the newest second are read (not every manifest of the database)."""
    keys = [(backup_id_time(parsed[1]), o.key) for o in storage.list(database_prefix(database))
            if (parsed := parse_manifest_key(o.key))]
    while keys:
        newest = max(t for t, _ in keys)
        found = [m for t, k in keys if t == newest and (m := _load_or_none(storage, k)) is not None]
        if found:
            return max(found, key=lambda m: (m.started_at, m.backup_id))
        keys = [(t, k) for t, k in keys if t != newest]  # deleted meanwhile by a prune: try the next second
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
