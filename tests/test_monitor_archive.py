"""The archive check's judgement, pure and table-tested (no I/O, ``now`` is an argument): WAL archiving failing,
falling behind while writes happen (an idle database is no alarm), the newest pgBackRest backup's age."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from charhub_ops.monitoring.archive import ArchiverRow, BackupStatus, judge, segment_start
from charhub_ops.monitoring.config import MonitorConfig

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
SEG = 16 * 2**20
MIN = 60.0


def row(**kw) -> ArchiverRow:
    """A healthy archiver: segment 7 archived 40 s ago, writing into segment 8, nothing waiting."""
    base = ArchiverRow(archived_count=7, last_archived_wal="000000010000000000000007",
                       last_archived_time=NOW - timedelta(seconds=40), failed_count=0, last_failed_wal=None,
                       last_failed_time=None, stats_reset=NOW - timedelta(days=2), current_lsn=8 * SEG + 4096,
                       segment_size=SEG, archive_mode="on", has_command=True, ready=0, oldest_ready=None,
                       oldest_ready_at=None, now=NOW)
    return replace(base, **kw)


def verdict(r: ArchiverRow, previous_failed: int | None = 0, previous_lsn: int | None = None,
            backup: BackupStatus | None = None, max_backup_age: float | None = None):
    return judge(r, max_archive_age=5 * MIN, max_backup_age=max_backup_age, previous_failed=previous_failed,
                 previous_lsn=previous_lsn, backup=backup or BackupStatus.unchecked(), now=NOW)


FAILED_AT = NOW - timedelta(seconds=30)
OLD = NOW - timedelta(minutes=12)
CASES = [
    # (name, row changes, previous failed count, previous LSN, expected problem or None)
    ("healthy", {}, 0, None, None),
    ("failures since the previous probe",
     {"failed_count": 3, "last_failed_wal": "000000010000000000000008", "last_failed_time": FAILED_AT,
      "ready": 1, "oldest_ready": "000000010000000000000008"}, 0, None,
     "archiving failed 3 times since the last probe: last failure 000000010000000000000008 at 01:59:30 UTC"),
    ("a last failure newer than the last success, first probe",
     {"failed_count": 2, "last_failed_wal": "000000010000000000000001", "last_failed_time": FAILED_AT,
      "last_archived_wal": None, "last_archived_time": None, "archived_count": 0}, None, None,
     "archiving is failing: last failure 000000010000000000000001 at 01:59:30 UTC (no WAL archived yet)"),
    ("an old failure, archived since: fine",
     {"failed_count": 2, "last_failed_wal": "000000010000000000000005", "last_failed_time": OLD}, 2, None, None),
    ("statistics reset: the count fell, not a rise", {"failed_count": 0}, 5, None, None),
    ("idle for two hours: nothing waiting (archive_timeout switches only after writes)",
     {"last_archived_time": NOW - timedelta(hours=2), "current_lsn": 8 * SEG + 200}, 0, 8 * SEG + 200, None),
    ("behind: segments waiting, last archived 12 min ago",
     {"last_archived_time": OLD, "ready": 3, "oldest_ready": "000000010000000000000008", "current_lsn": 11 * SEG,
      "oldest_ready_at": NOW - timedelta(minutes=11)}, 0, None,
     "last WAL archived 12 min ago while 48.0 MiB of WAL were written (3 segments waiting, the oldest for "
     "11 min; max 5 min)"),
    ("idle for hours, then a write: its segment waits for seconds",
     {"last_archived_time": NOW - timedelta(hours=2), "ready": 1, "oldest_ready": "000000010000000000000008",
      "oldest_ready_at": NOW - timedelta(seconds=2), "current_lsn": 9 * SEG}, 0, None, None),
    ("catching up: segments waiting, but the last archival is recent",
     {"last_archived_time": NOW - timedelta(minutes=3), "ready": 3, "oldest_ready": "000000010000000000000008",
      "oldest_ready_at": NOW - timedelta(minutes=10), "current_lsn": 11 * SEG}, 0, None, None),
    ("no status-dir privilege: writes since the previous probe and an old archival",
     {"last_archived_time": OLD, "ready": None, "current_lsn": 11 * SEG}, 0, 8 * SEG,
     "last WAL archived 12 min ago while 48.0 MiB of WAL were written since the previous probe (max 5 min)"),
    ("no status-dir privilege, idle: the LSN did not move",
     {"last_archived_time": OLD, "ready": None}, 0, 8 * SEG + 4096, None),
    ("no status-dir privilege, first probe: not judged yet",
     {"last_archived_time": OLD, "ready": None}, 0, None, None),
    ("archive_mode off", {"archive_mode": "off"}, 0, None,
     "archive_mode is off: no WAL is archived"),
    ("no archive_command", {"has_command": False}, 0, None,
     "archive_mode is on but archive_command is empty: WAL piles up in pg_wal"),
]


@pytest.mark.parametrize(("name", "changes", "prev_failed", "prev_lsn", "expected"), CASES, ids=[c[0] for c in CASES])
def test_archiving_judged(name, changes, prev_failed, prev_lsn, expected):
    v = verdict(row(**changes), prev_failed, prev_lsn)
    assert v.problems == ([expected] if expected else []), name
    assert v.facts["failed_count"] == row(**changes).failed_count  # kept in the check's state for the next probe
    assert v.facts["lsn"] == row(**changes).current_lsn


@pytest.mark.parametrize(("backup", "expected"), [
    (BackupStatus(checked=True, stop=NOW - timedelta(hours=30)), "newest pgBackRest backup 30 h old (max 26 h)"),
    (BackupStatus(checked=True, stop=NOW - timedelta(hours=3)), None),
    (BackupStatus(checked=True, stop=None), "no pgBackRest backup yet (max age 26 h)"),
    (BackupStatus(checked=False, note="pgbackrest: repository unreachable"), None),  # optional: not an alarm
])
def test_newest_backup_age(backup, expected):
    v = verdict(row(), backup=backup, max_backup_age=26 * 3600)
    assert v.problems == ([expected] if expected else [])
    if backup.note:
        assert backup.note in v.summary


def test_backup_age_not_judged_without_a_limit():
    v = verdict(row(), backup=BackupStatus(checked=True, stop=NOW - timedelta(days=9)), max_backup_age=None)
    assert v.problems == []


def test_every_problem_is_named_and_the_summary_tells_the_healthy_state():
    v = verdict(row(failed_count=3, last_failed_wal="000000010000000000000008", last_failed_time=FAILED_AT,
                    last_archived_time=OLD, ready=3, oldest_ready="000000010000000000000008", current_lsn=11 * SEG,
                    oldest_ready_at=OLD),
                backup=BackupStatus(checked=True, stop=NOW - timedelta(hours=30)), max_backup_age=26 * 3600)
    assert len(v.problems) == 3  # failures, behind, backup age: each named
    ok = verdict(row(), backup=BackupStatus(checked=True, stop=NOW - timedelta(hours=3)), max_backup_age=26 * 3600)
    assert ok.summary == ("last WAL 000000010000000000000007 archived 40 s ago, nothing waiting, "
                          "no failure since the last probe; newest pgBackRest backup 3.0 h old")


@pytest.mark.parametrize(("name", "start"), [
    ("000000010000000000000007", 7 * SEG),
    ("00000001000000010000000A", 2**32 + 10 * SEG),
    ("000000020000000000000003.00000028.backup", 3 * SEG),
    ("00000002.history", None),
    ("garbage", None),
])
def test_segment_start(name, start):
    assert segment_start(name, SEG) == start


def test_config_reads_durations_and_defaults():
    checks = MonitorConfig.model_validate({"checks": [
        {"id": "wal", "type": "archive"},
        {"id": "wal2", "type": "archive", "max_archive_age": "10m", "max_backup_age": None,
         "database_container": "charhub-postgres-1"}]}).checks
    first = checks[0]
    assert (first.max_archive_age, first.max_backup_age, first.backup_info_timeout) == (300.0, 26 * 3600.0, 5.0)
    assert (checks[1].max_archive_age, checks[1].max_backup_age) == (600.0, None)
    assert checks[1].database_container == "charhub-postgres-1"


def test_the_failure_count_and_position_ride_in_the_check_state():
    """evaluate keeps them in the state (a failed probe without facts keeps the previous ones); the next
    probe's context hands them back — the one-pass flow, health and the long-running monitor alike."""
    from charhub_ops.monitoring.checks import CheckResult
    from charhub_ops.monitoring.runner import context_for, evaluate
    from charhub_ops.monitoring.state import CheckState
    from charhub_ops.settings import load_settings

    check = MonitorConfig.model_validate({"checks": [{"id": "wal", "type": "archive"}]}).checks[0]
    first = evaluate(check, CheckResult("wal", True, "ok", facts=verdict(row()).facts), CheckState(check_id="wal"),
                     [], NOW).state
    assert (first.archive_failed_count, first.wal_lsn) == (0, 8 * SEG + 4096)
    unreachable = evaluate(check, CheckResult("wal", False, "cannot connect"), first, [], NOW).state
    assert (unreachable.archive_failed_count, unreachable.wal_lsn) == (0, 8 * SEG + 4096)
    ctx = context_for(check, load_settings(), unreachable, NOW)
    assert (ctx.archive_failed_count, ctx.wal_lsn, ctx.newest_backup) == (0, 8 * SEG + 4096, None)  # no repository


def test_the_diagnosis_shows_the_whole_row():
    from charhub_ops.monitoring.archive import archiver_markdown

    text = archiver_markdown(row(failed_count=3, last_failed_wal="000000010000000000000008", last_failed_time=FAILED_AT,
                                 ready=2, oldest_ready="000000010000000000000008"))
    assert text.splitlines()[0] == ("7 archived, 3 failed since 2026-12-03 02:00:00 UTC; last archived "
                                    "000000010000000000000007 at 2026-12-05 01:59:20 UTC; last failed "
                                    "000000010000000000000008 at 2026-12-05 01:59:30 UTC; segments waiting: 2")
    assert "| current_lsn | 0/8001000 |" in text and "| archive_mode | on |" in text
