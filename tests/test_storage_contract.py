"""One contract, three backends: memory, local directory, and S3 over HTTP (moto server)."""

from __future__ import annotations

import io
import os

import pytest

from charhub_ops.errors import ConfigError, NotFoundError, StorageError
from charhub_ops.storage import (
    LocalStorage,
    MemoryStorage,
    S3Options,
    S3Storage,
    choose_part_size,
    open_storage,
)
from charhub_ops.storage.base import MIB


@pytest.fixture(params=["memory", "local", "s3"])
def storage(request, tmp_path):
    if request.param == "memory":
        return MemoryStorage()
    if request.param == "local":
        return LocalStorage(tmp_path / "repo")
    bucket = request.getfixturevalue("bucket")
    return S3Storage(bucket, "backups/prod", S3Options(min_part_size=5 * MIB))


def test_put_open_stat_roundtrip(storage):
    data = os.urandom(300_000)
    result = storage.put_stream("db/1/dump", io.BytesIO(data))
    assert result.size == len(data)
    assert storage.get_bytes("db/1/dump") == data
    assert storage.stat("db/1/dump").size == len(data)
    assert storage.full_url("db/1/dump").endswith("/db/1/dump")


def test_missing_key_raises_not_found(storage):
    with pytest.raises(NotFoundError):
        storage.stat("nope")
    with pytest.raises(NotFoundError):
        storage.get_bytes("nope")


def test_list_prefix_sorted_and_delete_idempotent(storage):
    for key in ["b/2", "a/1", "b/1", "c"]:
        storage.put_bytes(key, key.encode())
    assert [o.key for o in storage.list("b/")] == ["b/1", "b/2"]
    assert [o.key for o in storage.list()] == ["a/1", "b/1", "b/2", "c"]
    result = storage.delete_many(["b/1", "b/2", "missing"])
    assert not result.failed and set(result.deleted) == {"b/1", "b/2", "missing"}
    assert [o.key for o in storage.list()] == ["a/1", "c"]


def test_overwrite_replaces(storage):
    storage.put_bytes("k", b"one")
    storage.put_bytes("k", b"two")
    assert storage.get_bytes("k") == b"two"


def test_progress_reports_every_byte(storage):
    seen = []
    storage.put_stream("p", io.BytesIO(b"x" * 3_000_000), progress=seen.append)
    assert sum(seen) == 3_000_000


class ShortReads(io.RawIOBase):
    """A source whose reads return at most 3,333 bytes: uneven parts unless the uploader reads exactly."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), 3333, self.left)
        buf[:n] = b"z" * n
        self.left -= n
        return n


def test_s3_multipart_parts_are_uniform_for_short_reads(bucket):
    store = S3Storage(bucket, "x", S3Options(min_part_size=5 * MIB, concurrency=3))
    sizes: list[int] = []

    def record(params, **_):
        sizes.append(len(params["body"].read()) if hasattr(params["body"], "read") else len(params["body"]))
        if hasattr(params["body"], "seek"):
            params["body"].seek(0)

    store.client.meta.events.register("before-call.s3.UploadPart", record)
    total = 5 * MIB * 3 + 12345
    result = store.put_stream("big", ShortReads(total), expected_size=total)
    assert result.size == total and store.stat("big").size == total
    assert len(sizes) == 4
    assert sizes[:3] == [5 * MIB] * 3 and sizes[3] == 12345


def test_s3_client_sends_checksums_only_when_required():
    store = S3Storage("bucket-x", "", S3Options(endpoint_url="http://127.0.0.1:1", region="auto",
                                                access_key_id="a", secret_access_key="b"))
    config = store.client.meta.config
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert store.client.meta.region_name == "auto"


def test_s3_delete_batches_over_1000_keys(bucket):
    store = S3Storage(bucket, "many")
    keys = [f"k/{i:05d}" for i in range(2100)]
    calls = []
    store.client.meta.events.register("before-call.s3.DeleteObjects", lambda params, **_: calls.append(1))
    for key in keys:
        store.client.put_object(Bucket=bucket, Key=f"many/{key}", Body=b"")
    assert len(list(store.list("k/"))) == 2100  # paginated past 1,000
    result = store.delete_many(keys)
    assert len(result.deleted) == 2100 and len(calls) == 3
    assert list(store.list()) == []


@pytest.mark.parametrize(("expected", "minimum", "part"), [
    (None, 8 * MIB, 8 * MIB),
    (10 * 1024 * MIB, 8 * MIB, 8 * MIB),            # 10 GiB ×2 / 10,000 = 2.05 MiB → minimum
    (100 * 1024 * MIB, 8 * MIB, 21 * MIB),          # 100 GiB → 20.48 MiB → 21 MiB
    (10**15, 8 * MIB, 5 * 1024 * MIB),              # capped at 5 GiB
])
def test_choose_part_size(expected, minimum, part):
    assert choose_part_size(expected, minimum) == part


def test_open_storage_schemes(tmp_path):
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    assert isinstance(open_storage("./rel"), LocalStorage)
    with pytest.raises(ConfigError, match="repository: unsupported scheme"):
        open_storage("ftp://x/y")
    with pytest.raises(ConfigError, match="repository"):
        open_storage("s3://ab/x")


def test_s3_missing_bucket_is_a_storage_error(s3_server):
    store = S3Storage("no-such-bucket-here", "p")
    with pytest.raises(StorageError, match="bucket does not exist"):
        store.put_bytes("k", b"x")


def test_s3_without_credentials_is_a_config_error(monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match="R2_ACCESS_KEY_ID"):
        S3Storage("bucket", "p")
