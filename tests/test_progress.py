"""Backup progress compares like with like: raw dump bytes against an estimate of the raw size."""

from __future__ import annotations

import pytest

from charhub_ops.backup import engine
from charhub_ops.backup.manifest import new_backup_id
from charhub_ops.pgurl import parse_pg_url
from charhub_ops.progress import expected_total
from charhub_ops.storage import MemoryStorage


@pytest.mark.parametrize(("previous_raw", "database_size", "total"), [
    (700, 5000, 700),     # the previous backup's raw size: same data, same tool
    (None, 5000, 5000),   # first backup: the database's size (an over-estimate)
    (0, 5000, 5000),      # an old manifest without a raw size
    (None, None, None),   # unknown: an indeterminate bar
    (None, 0, None),
])
def test_expected_total(previous_raw, database_size, total):
    assert expected_total(previous_raw, database_size) == total


def test_progress_counts_raw_dump_bytes_the_unit_of_the_total(pg, database):
    with pg.connect(database.rsplit("/", 1)[1]) as conn:  # text that zstd shrinks a lot: stored << raw
        conn.execute("CREATE TABLE t AS SELECT i, repeat('charhub ', 20) AS s FROM generate_series(1, 20000) i")
    url = parse_pg_url(database)
    pre = engine.preflight(url, None)
    seen: list[int] = []
    result = engine.dump_database(MemoryStorage(), url, pre, pre.databases[0], new_backup_id(_now()),
                                  recipients=[], progress=seen.append)
    assert result.stored_size_bytes < result.raw_size_bytes / 5
    assert sum(seen) == result.raw_size_bytes  # not the stored bytes: a bar against a raw total ends at 100 %
    assert expected_total(result.raw_size_bytes, pre.database_sizes[pre.databases[0]]) == sum(seen)


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)
