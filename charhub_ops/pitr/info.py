"""pgBackRest's ``info --output=json``, parsed (never its text).

``parse_info(text) -> list[StanzaInfo]``: one per stanza in the answer. Raises ``DatabaseError`` (permanent)
naming pgBackRest when the text is not the JSON array pgBackRest prints. Times are aware UTC datetimes (the
JSON has epoch seconds), so nothing here depends on a server's time zone.

Stanza status codes (pgBackRest's own): 0 ok, 1 missing stanza path, 2 no valid backups, 3 missing stanza
data, 4 different cipher, 5 database mismatch, 6 backup/expire running, 99 other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from charhub_ops.errors import DatabaseError

__all__ = ["BackupInfo", "StanzaInfo", "parse_info", "STATUS_OK", "STATUS_NO_BACKUP", "STATUS_MISSING"]

STATUS_OK, STATUS_NO_BACKUP = 0, 2
STATUS_MISSING = (1, 3)  # the stanza does not exist in the repository (yet)


@dataclass(frozen=True)
class BackupInfo:
    label: str  # 20261205-012346F, 20261205-012346F_20261205-012349D
    type: str  # full | diff | incr
    start: datetime
    stop: datetime
    size: int  # bytes of the cluster
    delta: int  # bytes copied by this backup
    repo_size: int | None  # bytes in the repository (absent with block incremental)
    repo_delta: int | None
    wal_start: str | None
    wal_stop: str | None
    prior: str | None
    error: bool

    @property
    def seconds(self) -> float:
        return (self.stop - self.start).total_seconds()


@dataclass(frozen=True)
class StanzaInfo:
    name: str
    status_code: int
    status_message: str
    cipher: str
    backups: tuple[BackupInfo, ...] = field(default=())
    wal_min: str | None = None
    wal_max: str | None = None
    backup_running: bool = False

    @property
    def exists(self) -> bool:
        return self.status_code not in STATUS_MISSING

    @property
    def newest(self) -> BackupInfo | None:
        """The newest backup without error (any type), or None."""
        good = [b for b in self.backups if not b.error]
        return max(good, key=lambda b: b.stop) if good else None

    def newest_of(self, kind: str) -> BackupInfo | None:
        good = [b for b in self.backups if not b.error and b.type == kind]
        return max(good, key=lambda b: b.stop) if good else None


def _time(value: object) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)  # type: ignore[arg-type]


def _backup(raw: dict) -> BackupInfo:
    info, repo = raw.get("info") or {}, (raw.get("info") or {}).get("repository") or {}
    archive = raw.get("archive") or {}
    return BackupInfo(label=raw["label"], type=raw["type"], start=_time(raw["timestamp"]["start"]),
                      stop=_time(raw["timestamp"]["stop"]), size=int(info.get("size", 0)),
                      delta=int(info.get("delta", 0)), repo_size=repo.get("size"), repo_delta=repo.get("delta"),
                      wal_start=archive.get("start"), wal_stop=archive.get("stop"), prior=raw.get("prior"),
                      error=bool(raw.get("error", False)))


def _stanza(raw: dict) -> StanzaInfo:
    status = raw.get("status") or {}
    archives = raw.get("archive") or []
    mins = [a["min"] for a in archives if a.get("min")]
    maxes = [a["max"] for a in archives if a.get("max")]
    lock = ((status.get("lock") or {}).get("backup") or {}).get("held", False)
    return StanzaInfo(name=raw["name"], status_code=int(status.get("code", 99)),
                      status_message=str(status.get("message", "")), cipher=str(raw.get("cipher", "none")),
                      backups=tuple(_backup(b) for b in raw.get("backup") or []),
                      wal_min=min(mins) if mins else None, wal_max=max(maxes) if maxes else None,
                      backup_running=bool(lock))


def parse_info(text: str | bytes) -> list[StanzaInfo]:
    try:
        data = json.loads(text, strict=False)  # a wrong passphrase puts raw control bytes in messages
        if not isinstance(data, list):
            raise TypeError("not a list")
        return [_stanza(item) for item in data]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DatabaseError(f"pgbackrest: info --output=json gave unexpected output ({exc})") from None
