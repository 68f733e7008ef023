"""The ``archive`` check: is WAL archiving keeping up, and is the newest pgBackRest backup recent?

:func:`read_archiver` reads one row — ``pg_stat_archiver``, ``pg_current_wal_lsn()``, the archiving settings and
the WAL segments waiting in ``pg_wal/archive_status`` (``pg_ls_archive_statusdir()``: superuser or ``pg_monitor``;
unknown without the privilege) — through any :class:`~charhub_ops.postgres.SqlSession` (psycopg from here or psql in
the database container). :func:`judge` is pure (``now`` is an argument: the server's clock, the one the
archiver's times come from) and names every problem:

* **failing** — ``failed_count`` rose since the previous probe (its value is kept in the check's state), or the
  last failure is newer than the last success (the archiver retries that segment until it succeeds);
* **behind** — the last archival is older than ``max_archive_age`` *while writes happen*: segments have been
  waiting in ``archive_status`` for longer than that too (or, without the privilege to list it, the WAL
  position moved since the previous probe). An idle database is no alarm: ``archive_timeout`` switches
  segments only after writes, so nothing waits however old the last archival is, and the first write after a
  quiet spell waits only seconds;
* **off** — ``archive_mode`` off, or on without an ``archive_command``/``archive_library``;
* **old backup** — the newest pgBackRest backup older than ``max_backup_age`` (only when pgBackRest's info
  could be read: :class:`BackupStatus`; an unreachable repository is a note, not an alarm).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from charhub_ops.fmt import human_bytes

__all__ = ["ArchiverRow", "BackupStatus", "Verdict", "ARCHIVER_SQL", "READY_SQL", "read_archiver", "judge",
           "segment_start", "archiver_markdown"]

ARCHIVER_SQL = """
SELECT a.archived_count, a.last_archived_wal, extract(epoch FROM a.last_archived_time)::float8,
       a.failed_count, a.last_failed_wal, extract(epoch FROM a.last_failed_time)::float8,
       extract(epoch FROM a.stats_reset)::float8,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint END,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
       current_setting('archive_mode'),
       current_setting('archive_command') <> '' OR coalesce(current_setting('archive_library', true), '') <> '',
       has_function_privilege('pg_ls_archive_statusdir()', 'EXECUTE'),
       extract(epoch FROM now())::float8
FROM pg_stat_archiver a"""
# Only with the privilege (superuser or pg_monitor): the function's ACL is checked when a statement naming it
# starts, whichever CASE branch runs, hence a second statement.
READY_SQL = r"""
SELECT count(*), min(left(name, 24)), extract(epoch FROM min(modification))::float8
FROM pg_ls_archive_statusdir() WHERE name ~ '^[0-9A-F]{24}\.ready$'"""
_SEGMENT = re.compile(r"^[0-9A-F]{8}([0-9A-F]{8})([0-9A-F]{8})(\.[0-9A-F]{8}\.backup)?$")


@dataclass(frozen=True)
class ArchiverRow:
    """``pg_stat_archiver`` plus what judging it needs (times aware UTC, LSNs in bytes)."""

    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None
    stats_reset: datetime | None
    current_lsn: int | None          # None on a standby
    segment_size: int
    archive_mode: str
    has_command: bool
    ready: int | None                # segments waiting in archive_status; None = not allowed to list it
    oldest_ready: str | None
    oldest_ready_at: datetime | None  # when the oldest waiting segment was finished (its .ready file)
    now: datetime                    # the server's clock


@dataclass(frozen=True)
class BackupStatus:
    """The newest pgBackRest backup: ``checked`` False when its info could not be read (``note`` says why)."""

    checked: bool
    stop: datetime | None = None
    note: str = ""

    @classmethod
    def unchecked(cls, note: str = "") -> BackupStatus:
        return cls(checked=False, note=note)


@dataclass(frozen=True)
class Verdict:
    problems: list[str]
    summary: str
    facts: dict


def _time(value) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def _int(value) -> int | None:
    return None if value is None else int(value)


def read_archiver(session) -> ArchiverRow:
    """One row from ``session`` (values may be text: psql in a container); raises DatabaseError."""
    (r,) = session.query(ARCHIVER_SQL)
    ready = session.query(READY_SQL)[0] if _true(r[11]) else (None, None, None)
    return ArchiverRow(archived_count=int(r[0]), last_archived_wal=r[1], last_archived_time=_time(r[2]),
                       failed_count=int(r[3]), last_failed_wal=r[4], last_failed_time=_time(r[5]),
                       stats_reset=_time(r[6]), current_lsn=_int(r[7]), segment_size=int(r[8]),
                       archive_mode=str(r[9]), has_command=_true(r[10]), ready=_int(ready[0]),
                       oldest_ready=ready[1], oldest_ready_at=_time(ready[2]), now=_time(r[12]))


def _true(value) -> bool:
    return value in (True, "t", "true")


def segment_start(name: str | None, segment_size: int) -> int | None:
    """The LSN (bytes) where WAL segment ``name`` starts (also for its ``.backup`` file); None for a history
    file or anything else."""
    m = _SEGMENT.match(name or "")
    if not m:
        return None
    return int(m.group(1), 16) * 2**32 + int(m.group(2), 16) * segment_size


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.0f} h" if hours >= 10 else f"{hours:.1f} h"


def _at(when: datetime, now: datetime) -> str:
    return f"{when:%H:%M:%S} UTC" if when.date() == now.date() else f"{when:%Y-%m-%d %H:%M:%S} UTC"


def _failing(r: ArchiverRow, previous_failed: int | None) -> str | None:
    newer = r.last_failed_time is not None and (r.last_archived_time is None
                                               or r.last_failed_time > r.last_archived_time)
    rose = previous_failed is not None and r.failed_count > previous_failed
    if not (rose or newer):
        return None
    last = f"last failure {r.last_failed_wal} at {_at(r.last_failed_time, r.now)}" if r.last_failed_time else ""
    if rose:
        n = r.failed_count - previous_failed
        return f"archiving failed {n} time{'s' if n > 1 else ''} since the last probe: {last}"
    since = f"last success at {_at(r.last_archived_time, r.now)}" if r.last_archived_time else "no WAL archived yet"
    return f"archiving is failing: {last} ({since})"


def _behind(r: ArchiverRow, previous_lsn: int | None, max_age: float) -> str | None:
    since = r.last_archived_time or r.stats_reset
    age = (r.now - since).total_seconds() if since else None
    if age is None or age <= max_age or r.current_lsn is None:
        return None
    last = f"last WAL archived {_ago(age)} ago" if r.last_archived_time else f"no WAL archived in {_ago(age)}"
    if r.ready is not None:
        start = segment_start(r.oldest_ready, r.segment_size)
        waited = (r.now - r.oldest_ready_at).total_seconds() if r.oldest_ready_at else 0.0
        if not r.ready or start is None or waited <= max_age:  # a first write after a quiet spell: not behind
            return None
        return (f"{last} while {human_bytes(r.current_lsn - start)} of WAL were written ({r.ready} "
                f"segment{'s' if r.ready > 1 else ''} waiting, the oldest for {_ago(waited)}; max {_ago(max_age)})")
    if previous_lsn is None or r.current_lsn <= previous_lsn:
        return None
    return (f"{last} while {human_bytes(r.current_lsn - previous_lsn)} of WAL were written since the previous "
            f"probe (max {_ago(max_age)})")


def _off(r: ArchiverRow) -> str | None:
    if r.archive_mode == "off":
        return "archive_mode is off: no WAL is archived"
    if not r.has_command:
        return "archive_mode is on but archive_command is empty: WAL piles up in pg_wal"
    return None


def _backup(b: BackupStatus, max_age: float | None, now: datetime) -> tuple[str | None, str]:
    """(problem, summary part) of the newest pgBackRest backup."""
    if max_age is None:
        return None, ""
    if not b.checked:
        return None, f"pgBackRest backups not checked ({b.note})" if b.note else ""
    if b.stop is None:
        return f"no pgBackRest backup yet (max age {_ago(max_age)})", ""
    age = (now - b.stop).total_seconds()
    if age > max_age:
        return f"newest pgBackRest backup {_ago(age)} old (max {_ago(max_age)})", ""
    return None, f"newest pgBackRest backup {_ago(age)} old"


def _healthy(r: ArchiverRow) -> str:
    if r.last_archived_time is None:
        head = "no WAL archived yet"
    else:
        head = f"last WAL {r.last_archived_wal} archived {_ago((r.now - r.last_archived_time).total_seconds())} ago"
    waiting = "" if r.ready is None else (", nothing waiting" if not r.ready else f", {r.ready} segment(s) waiting")
    return f"{head}{waiting}, no failure since the last probe"


def judge(r: ArchiverRow, *, max_archive_age: float, max_backup_age: float | None, previous_failed: int | None,
          previous_lsn: int | None, backup: BackupStatus, now: datetime) -> Verdict:
    """Every problem of ``r`` (and of ``backup``), a one-line summary, and the facts kept for the next probe
    (``failed_count``, ``lsn``) and the report (``archiver``)."""
    backup_problem, backup_part = _backup(backup, max_backup_age, now)
    problems = [p for p in (_off(r), _failing(r, previous_failed), _behind(r, previous_lsn, max_archive_age),
                            backup_problem) if p]
    summary = "; ".join(p for p in (_healthy(r), backup_part) if p)
    facts = {"failed_count": r.failed_count, "lsn": r.current_lsn,
             "archiver": {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(r).items()}}
    return Verdict(problems, summary, facts)


def _lsn(value: int | None) -> str:
    return "—" if value is None else f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def archiver_markdown(r: ArchiverRow) -> str:
    """The row for an incident's diagnosis: a one-line summary, then a two-column table."""
    def when(t: datetime | None) -> str:
        return f"{t:%Y-%m-%d %H:%M:%S} UTC" if t else "never"

    archived = f"{r.last_archived_wal} at {when(r.last_archived_time)}" if r.last_archived_wal else "none"
    failed = f"{r.last_failed_wal} at {when(r.last_failed_time)}" if r.last_failed_wal else "none"
    waiting = "unknown (no privilege for pg_ls_archive_statusdir)" if r.ready is None else str(r.ready)
    lines = [f"{r.archived_count} archived, {r.failed_count} failed since {when(r.stats_reset)}; last archived "
             f"{archived}; last failed {failed}; segments waiting: {waiting}", "",
             "| pg_stat_archiver / setting | value |", "|---|---|"]
    for key, value in asdict(r).items():
        shown = f"{value:%Y-%m-%d %H:%M:%S} UTC" if isinstance(value, datetime) else value
        shown = _lsn(value) if key == "current_lsn" else shown
        lines.append(f"| {key} | {'—' if shown is None else shown} |")
    return "\n".join(lines)
