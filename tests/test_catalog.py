"""The catalog against the in-memory backend: latest_backup reads only the newest second's manifests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from charhub_ops.catalog import latest_backup, list_backups
from charhub_ops.storage import MemoryStorage
from tests.test_restore import _manifest

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _store(entries: list[tuple[int, int]]) -> MemoryStorage:
    storage = MemoryStorage()
    for i, (seconds, micros) in enumerate(entries):
        m = _manifest("x", T0 + timedelta(seconds=seconds, microseconds=micros))
        m.database = "db"
        m.backup_id = (T0 + timedelta(seconds=seconds)).strftime("%Y%m%dT%H%M%SZ") + f"-{i:04x}"
        storage.put_bytes(f"db/{m.backup_id}/manifest.json", m.model_dump_json().encode())
    storage.put_bytes("db/20260101T000009Z-ffff/dump.pgc.zst", b"no manifest: not a backup")
    return storage


def test_latest_backup_agrees_with_the_full_listing_and_reads_few_manifests():
    storage = _store([(0, 0), (5, 100), (5, 900), (3, 0)])
    reads = []
    original = storage.open
    storage.open = lambda key: reads.append(key) or original(key)
    latest = latest_backup(storage, "db")
    assert latest.backup_id == "20260101T000005Z-0002"
    assert len(reads) == 2  # the two manifests of second 5, not all four
    assert latest.backup_id == list_backups(storage, "db")[0].backup_id
    assert latest_backup(storage, "other") is None
