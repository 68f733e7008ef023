"""The backup manifest and the repository layout (the catalog).

Layout under the repository root::

    <database>/<backup_id>/dump.pgc.zst[.age]     pg_dump -Fc, zstd, optionally age
    <database>/<backup_id>/globals.sql.zst[.age]  pg_dumpall --globals-only
    <database>/<backup_id>/manifest.json          written LAST: a backup without it does not exist

``backup_id`` is the UTC start time plus a random suffix (``20261126T023000Z-3f9a``), so ids sort by time.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal
from urllib.parse import quote, unquote

from pydantic import BaseModel, Field

__all__ = [
    "TableStat", "ObjectRef", "DatabaseLocale", "Manifest", "new_backup_id", "backup_prefix", "manifest_key",
    "parse_manifest_key", "backup_id_time", "MANIFEST", "FORMAT", "Verification", "verification_key",
    "VERIFICATION", "database_prefix", "split_backup_key",
]

FORMAT = "charhub-ops/backup/v1"
MANIFEST = "manifest.json"
VERIFICATION = "verification.json"


class TableStat(BaseModel):
    schema_name: str
    name: str
    rows: int
    size_bytes: int
    content_hash: str | None = Field(None, description="md5 of all rows in text order (tables up to the limit)")


class ObjectRef(BaseModel):
    key: str
    size_bytes: int
    sha256: str


class DatabaseLocale(BaseModel):
    """Encoding and collation of the backed-up database: a restore creates its database with them."""

    encoding: str = Field(description="pg_database.encoding, e.g. UTF8")
    collate: str = Field(description="datcollate (LC_COLLATE)")
    ctype: str = Field(description="datctype (LC_CTYPE)")
    provider: Literal["libc", "icu", "builtin"] | None = Field(
        None, description="datlocprovider; None: the server (< 15) had no locale providers")
    provider_locale: str | None = Field(None, description="the ICU (daticulocale) or builtin (datlocale) locale")
    icu_rules: str | None = Field(None, description="daticurules (PostgreSQL ≥ 16)")


class Manifest(BaseModel):
    format: Literal["charhub-ops/backup/v1"] = FORMAT
    backup_id: str
    database: str
    server_version: str
    server_version_num: int
    pg_dump_version: str
    dump_method: Literal["local", "docker"]
    started_at: datetime
    finished_at: datetime
    database_size_bytes: int
    raw_size_bytes: int = Field(description="pg_dump output before compression")
    stored_size_bytes: int
    sha256: str = Field(description="SHA-256 of the stored dump object (after compression/encryption)")
    compression: dict = Field(default_factory=lambda: {"algorithm": "zstd"})
    encryption: dict | None = Field(None, description="{'algorithm': 'age', 'recipients': [fingerprints]}")
    dump: ObjectRef
    globals: ObjectRef | None = None
    globals_note: str | None = None
    snapshot: str | None = None
    tables: list[TableStat] = Field(default_factory=list)
    tool_version: str
    locale: DatabaseLocale | None = Field(None, description="None in manifests written before it was recorded")
    hash_format: int = Field(1, description="how content hashes were computed (charhub_ops.postgres.HASH_FORMAT)")
    label: str | None = Field(None, description="why it was taken, e.g. pre-deploy-<tag or sha> (None: a plain backup)")

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


class Verification(BaseModel):
    """The verdict of a restore drill, stored as ``verification.json`` beside the manifest."""

    backup_id: str
    verified_at: datetime
    ok: bool
    tables: int
    rows: int
    hashed_tables: int
    mismatches: list[str] = Field(default_factory=list)
    duration_seconds: float


def verification_key(database: str, backup_id: str) -> str:
    return backup_prefix(database, backup_id) + VERIFICATION


def new_backup_id(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


@lru_cache(maxsize=65536)
def backup_id_time(backup_id: str) -> datetime:
    """The UTC start time encoded in a backup id; ValueError for anything else."""
    return datetime.strptime(backup_id.split("-")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def database_prefix(database: str | None) -> str:
    """The key prefix of one database's backups ('' = the whole repository)."""
    return f"{quote(database, safe='')}/" if database else ""


def split_backup_key(key: str) -> tuple[str, str, str] | None:
    """(database, backup_id, file) of a key in the layout above, or None for any other key."""
    parts = key.split("/", 2)
    if len(parts) != 3 or not parts[2]:
        return None
    try:
        backup_id_time(parts[1])
    except ValueError:
        return None
    return unquote(parts[0]), parts[1], parts[2]


def backup_prefix(database: str, backup_id: str) -> str:
    return f"{quote(database, safe='')}/{backup_id}/"


def manifest_key(database: str, backup_id: str) -> str:
    return backup_prefix(database, backup_id) + MANIFEST


def parse_manifest_key(key: str) -> tuple[str, str] | None:
    """(database, backup_id) of a manifest key, or None for any other object."""
    parts = split_backup_key(key)
    return (parts[0], parts[1]) if parts and parts[2] == MANIFEST else None
