"""What the pgBackRest runs report, from ``info`` (:mod:`.info`): pure functions, no I/O, no Prefect.

* :func:`backup_notes` — a diff or incr with no full backup to build on became a full one (pgBackRest does so
  itself): the report says it.
* :func:`backup_payload` / :func:`backup_markdown` — after it: label, type, duration, cluster size, bytes
  copied, repository size of this backup and of the whole stanza, WAL range (event payload and artifact).
* :func:`expired` / :func:`expire_markdown` — what an ``expire`` removed (labels present before, gone after)
  and the retention mapping it applied.
* :func:`physical_rows` — the rows ``backups list`` shows beside the logical backups (kind ``physical``);
  :func:`repository_usage` — the pgBackRest repository in the capacity report.

Nothing here holds a secret: info's JSON has none (the passphrase stays in pgBackRest's configuration).
"""

from __future__ import annotations

from datetime import datetime

from charhub_ops.fmt import human_bytes
from charhub_ops.pitr.info import BackupInfo, StanzaInfo

__all__ = ["KINDS", "backup_notes", "backup_payload", "backup_markdown", "expired", "expire_markdown",
           "physical_rows", "repository_usage", "stanza_repo_size", "resource_id"]

KINDS = ("full", "diff", "incr")


def resource_id(stanza: str) -> str:
    """The event resource of a stanza's runs: ``charhub.pitr.<stanza>``."""
    return f"charhub.pitr.{stanza}"


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def backup_notes(kind: str, backup: BackupInfo) -> list[str]:
    """What the report should say about a backup that is not what was asked (a diff/incr without a full)."""
    if backup.type != kind:
        return [f"no full backup to build on: pgBackRest made this {kind} backup a {backup.type} one"]
    return []


def stanza_repo_size(info: StanzaInfo) -> int | None:
    """Bytes the stanza's backups take in the repository (sum of each backup's repository delta; None when
    pgBackRest does not report it, e.g. with block incremental)."""
    deltas = [b.repo_delta for b in info.backups]
    return sum(deltas) if deltas and None not in deltas else None


def backup_payload(b: BackupInfo, info: StanzaInfo, repository: str, kind: str) -> dict:
    """The ``charhub.pitr.backup.completed`` payload (no secrets: labels, sizes, times, WAL names)."""
    return {"stanza": info.name, "repository": repository, "label": b.label, "type": b.type, "requested": kind,
            "started_at": _iso(b.start), "finished_at": _iso(b.stop), "duration_seconds": b.seconds,
            "size_bytes": b.size, "delta_bytes": b.delta, "repo_size_bytes": b.repo_size,
            "repo_delta_bytes": b.repo_delta, "repository_size_bytes": stanza_repo_size(info),
            "backups": len(info.backups), "wal_start": b.wal_start, "wal_stop": b.wal_stop,
            "wal_min": info.wal_min, "wal_max": info.wal_max, "prior": b.prior}


def _size(n: int | None) -> str:
    return "—" if n is None else human_bytes(n)


def backup_markdown(payload: dict, notes: list[str]) -> str:
    p = payload
    lines = [f"# pgBackRest {p['type']} backup of stanza `{p['stanza']}`", "",
             f"Repository `{p['repository']}`", "",
             "| label | type | duration | cluster size | copied | stored | repository total | backups | WAL range |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| `{p['label']}` | {p['type']} | {p['duration_seconds']:.0f} s | {_size(p['size_bytes'])} "
             f"| {_size(p['delta_bytes'])} | {_size(p['repo_delta_bytes'])} | {_size(p['repository_size_bytes'])} "
             f"| {p['backups']} | `{p['wal_start']}` … `{p['wal_stop']}` |", "",
             f"WAL archived in the repository: `{p['wal_min']}` … `{p['wal_max']}`"]
    return "\n".join(lines + ([""] + [f"- note: {n}" for n in notes] if notes else []))


def expired(before: StanzaInfo, after: StanzaInfo) -> list[BackupInfo]:
    """The backups of ``before`` that ``after`` no longer lists, oldest first."""
    kept = {b.label for b in after.backups}
    return sorted((b for b in before.backups if b.label not in kept), key=lambda b: b.stop)


def expire_markdown(stanza: str, repository: str, mapping: dict[str, str], gone: list[BackupInfo],
                    kept: list[BackupInfo], wal_min: str | None, dry_run: bool) -> str:
    head = "would expire" if dry_run else "expired"
    lines = [f"# pgBackRest expire of stanza `{stanza}`{' (dry run)' if dry_run else ''}", "",
             f"Repository `{repository}`", "", "| setting | pgBackRest option |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in mapping.items()]
    lines += ["", f"{len(gone)} backup(s) {head}; {len(kept)} kept; WAL kept from `{wal_min}`", ""]
    if gone:
        lines += ["| label | type | finished UTC | size |", "|---|---|---|---|"]
        lines += [f"| `{b.label}` | {b.type} | {b.stop:%Y-%m-%d %H:%M} | {_size(b.repo_delta)} |" for b in gone]
    return "\n".join(lines)


def physical_rows(info: StanzaInfo, repository: str) -> list[dict]:
    """``backups list`` rows (newest first) for the stanza's backups: the logical rows' keys, ``kind``
    physical, the whole cluster as the database (``cluster:<stanza>``), tables/rows unknown."""
    rows = []
    for b in sorted(info.backups, key=lambda b: b.stop, reverse=True):
        rows.append({"kind": "physical", "backup_id": b.label, "database": f"cluster:{info.name}",
                     "type": b.type, "started_at": _iso(b.start), "finished_at": _iso(b.stop),
                     "size_bytes": b.repo_delta if b.repo_delta is not None else b.delta,
                     "raw_size_bytes": b.size, "key": f"{repository.rstrip('/')}#{info.name}/{b.label}",
                     "encrypted": info.cipher != "none", "tables": None, "rows": None, "verified_at": None,
                     "verified_ok": None, "error": b.error, "wal_start": b.wal_start, "wal_stop": b.wal_stop})
    return rows


def repository_usage(info: StanzaInfo, repository: str) -> dict:
    """The capacity report's ``pitr`` section: backups by type, repository size, newest backup, WAL range."""
    newest = info.newest
    counts = {kind: sum(1 for b in info.backups if b.type == kind) for kind in KINDS}
    return {"repository": repository, "stanza": info.name, "status": info.status_message,
            "backups": len(info.backups), "by_type": counts, "repository_size_bytes": stanza_repo_size(info),
            "cluster_size_bytes": newest.size if newest else None,
            "newest": newest.label if newest else None, "newest_at": _iso(newest.stop) if newest else None,
            "wal_min": info.wal_min, "wal_max": info.wal_max}
