"""``pitr verify``: the physical restore drill — restore into a scratch instance, start it, compare it with the
live database using the logical drill's own checks (row counts and content hashes), remove it.

The live database moves on while the drill runs, so the copy is restored to a point that matches a known
state of the live database:

1. the live tables' write counters are read (``pg_stat_user_tables``: ``n_tup_ins + n_tup_upd + n_tup_del``);
2. row counts and content hashes are read in ONE ``REPEATABLE READ`` snapshot — the same
   :func:`charhub_ops.postgres.table_checks` the logical backup writes into its manifest (tables up to
   ``hash_limit_bytes`` get a hash, larger ones a row count);
3. right after, a named restore point (``pg_create_restore_point``) is made, its WAL segment is switched
   and waited for in the archive (``pg_stat_archiver``);
4. the cluster is restored to that point (``--type=name``) into a scratch instance, started, and checked
   with :func:`charhub_ops.restore.engine.check_tables` against the snapshot's figures;
5. the write counters are read again: a table written between the snapshot and the restore point may
   rightly differ — it is reported under ``written_during_drill``, not as a mismatch. Every other table
   must match exactly. PostgreSQL flushes a session's statistics when it goes idle (a few seconds later), so
   the second read waits until at least ``STATS_SETTLE`` seconds after the restore point; a session that
   writes without ever going idle for a minute can still make its table look mismatched (a false alarm,
   never a missed one for a table nobody wrote).

With the database in a container, both sides are psql sessions inside the containers (the scratch one is a new
container, :mod:`charhub_ops.pitr.scratch_container`). The drill needs the rights of the backup itself:
``pg_create_restore_point`` and ``pg_switch_wal`` (a superuser, CharHub's ``POSTGRES_USER``, or the grants).
The verdict is a :class:`VerifyResult`; the scratch instance is always removed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from psycopg import sql

from charhub_ops.backup.manifest import TableStat
from charhub_ops.errors import DatabaseError
from charhub_ops.pgurl import PgUrl
from charhub_ops.pitr.command import PgBackRest
from charhub_ops.pitr.restore import Target
from charhub_ops.pitr.scratch import scratch_copy
from charhub_ops.postgres import HASH_FORMAT, SqlSession, list_tables, open_session, table_checks
from charhub_ops.restore.engine import check_tables

__all__ = ["VerifyResult", "verify", "restore_point_name", "snapshot_stats", "write_counters", "STATS_SETTLE"]

STATS_SETTLE = 12.0  # seconds after the restore point before the write counters are read again
_COUNTERS = ("SELECT schemaname, relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables")


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    database: str
    target: str  # "restore point charhub-ops-verify-..."
    restore_point: str
    tables: int  # tables compared (written_during_drill excluded)
    rows: int
    hashed_tables: int
    mismatches: tuple[str, ...] = field(default=())
    written_during_drill: tuple[str, ...] = field(default=())
    backup_label: str | None = None  # the newest backup when the drill started (the restore's base)
    restore_seconds: float = 0.0
    seconds: float = 0.0


def restore_point_name(now: datetime) -> str:
    return f"charhub-ops-verify-{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}"


def write_counters(session: SqlSession) -> dict[tuple[str, str], int]:
    session.query("SELECT pg_stat_clear_snapshot()")  # a fresh read, not the transaction's cached one
    return {(str(s), str(n)): int(c) for s, n, c in session.query(_COUNTERS)}


def snapshot_stats(session: SqlSession, hash_limit_bytes: int) -> list[TableStat]:
    """Row counts and content hashes of every table in one REPEATABLE READ snapshot (the manifest's code)."""
    session.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    try:
        tables = list_tables(session)
        found = table_checks(session, tables, hash_limit_bytes)
    finally:
        session.query("ROLLBACK")
    return [TableStat(schema_name=t.schema, name=t.name, size_bytes=t.size_bytes, rows=found[(t.schema, t.name)][0],
                      content_hash=found[(t.schema, t.name)][1]) for t in tables]


def _make_point(session: SqlSession, name: str, timeout: float) -> None:
    """Create the restore point, switch WAL and wait until its segment is archived."""
    session.query(sql.SQL("SELECT pg_create_restore_point({})").format(sql.Literal(name)).as_string(None))
    ((segment,),) = session.query("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + timeout
    while True:
        ((done, failed),) = session.query("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver")
        if done and str(done)[8:] >= str(segment)[8:]:  # the timeline may differ, the position decides
            return
        if time.monotonic() > deadline:
            raise DatabaseError(f"pitr verify: WAL segment {segment} of the restore point was not archived within "
                                f"{timeout:.0f} s (last archived {done}, last failed {failed}): archiving is "
                                "behind or failing (see pg_stat_archiver and PostgreSQL's log)")
        time.sleep(0.5)


def _written(before: dict, after: dict, stats: list[TableStat]) -> set[tuple[str, str]]:
    return {(t.schema_name, t.name) for t in stats
            if before.get((t.schema_name, t.name)) != after.get((t.schema_name, t.name))}


def verify(pgb: PgBackRest, live_url: PgUrl, *, hash_limit_bytes: int, work_dir: str | None = None,
           timeout: float = 3600.0, archive_timeout: float = 180.0) -> VerifyResult:
    """The drill described in the module docstring, on ``live_url``'s database."""
    started, point = time.monotonic(), restore_point_name(datetime.now(UTC))
    label = pgb.info().newest
    with open_session(live_url, pgb.container) as live:
        before = write_counters(live)
        stats = snapshot_stats(live, hash_limit_bytes)
        _make_point(live, point, archive_timeout)
    pointed = time.monotonic()
    with scratch_copy(pgb, Target.point(point), live_url, work_dir, timeout) as (scratch, restored):
        time.sleep(max(0.0, STATS_SETTLE - (time.monotonic() - pointed)))
        with open_session(live_url, pgb.container) as live:
            written = _written(before, write_counters(live), stats)
        with scratch.session(live_url) as copy:
            checked = check_tables(copy, [t for t in stats if (t.schema_name, t.name) not in written],
                                   HASH_FORMAT, source="live snapshot")
    return VerifyResult(ok=checked.ok, database=live_url.dbname, target=restored.target, restore_point=point,
                        tables=checked.tables, rows=checked.rows, hashed_tables=checked.hashed,
                        mismatches=tuple(checked.mismatches),
                        written_during_drill=tuple(sorted(f"{s}.{n}" for s, n in written)),
                        backup_label=label.label if label else None, restore_seconds=restored.seconds,
                        seconds=time.monotonic() - started)
