"""The catalog: latest_backup reads only the newest second's manifests (memory backend); an
unreadable manifest is skipped with a warning naming its key (local directory and S3 over HTTP)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from charhub_ops.backup.catalog import latest_backup, list_backups, list_backups_verified
from charhub_ops.storage import LocalStorage, MemoryStorage, S3Storage
from tests.test_restore import _manifest
from tests.test_storage_contract import run_cli

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


GOOD = "db/20260101T000000Z-0001/manifest.json"
BAD = "db/20260101T000005Z-0002/manifest.json"  # newer than the good one: latest_backup reads it first


def _good_manifest() -> bytes:
    m = _manifest("20260101T000000Z-0001", T0)
    return m.model_dump_json().encode()


@pytest.fixture(params=["local", "s3"])
def repo(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "repo")
    return S3Storage(request.getfixturevalue("bucket"), "backups")


@pytest.mark.parametrize("bad", [
    b"{not json",
    _good_manifest()[:200],                                        # truncated
    json.dumps({"format": "someone-else/v9", "id": 1}).encode(),   # another schema
    b"\xff\xfe binary",
], ids=["invalid-json", "truncated", "wrong-schema", "binary"])
def test_unreadable_manifest_is_skipped_with_a_warning_naming_it(repo, bad):
    repo.put_bytes(GOOD, _good_manifest())
    repo.put_bytes(BAD, bad)
    for find in (lambda warn: list_backups(repo, warn=warn),
                 lambda warn: [m for m, _ in list_backups_verified(repo, warn=warn)],
                 lambda warn: [latest_backup(repo, "db", warn=warn)]):
        warnings: list[str] = []
        assert [m.backup_id for m in find(warnings.append)] == ["20260101T000000Z-0001"]
        assert len(warnings) == 1 and repo.full_url(BAD) in warnings[0] and "not a valid manifest" in warnings[0]


def test_without_a_callback_the_warning_goes_to_the_log(caplog):
    storage = MemoryStorage()
    storage.put_bytes(GOOD, _good_manifest())
    storage.put_bytes(BAD, b"{")
    with caplog.at_level(logging.WARNING, logger="charhub_ops.backup.catalog"):
        assert len(list_backups(storage)) == 1
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and BAD in caplog.records[0].getMessage()


def test_cli_backups_list_warns_on_stderr_and_lists_the_good_backup(tmp_path):
    storage = LocalStorage(tmp_path / "repo")
    storage.put_bytes(GOOD, _good_manifest())
    storage.put_bytes(BAD, b'{"format": "charhub-ops/backup/v1", "backup_id": ')
    proc = run_cli("backups", "list", "--from", f"file://{tmp_path}/repo", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [b["backup_id"] for b in json.loads(proc.stdout)] == ["20260101T000000Z-0001"]
    assert storage.full_url(BAD) in proc.stderr and "Traceback" not in proc.stderr
