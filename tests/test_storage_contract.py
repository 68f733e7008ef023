"""One contract, three backends: memory, local directory, and S3 over HTTP (moto server)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import botocore.exceptions as bce
import pytest
from boto3.exceptions import S3UploadFailedError
from urllib3.exceptions import ProtocolError

from charhub_ops.errors import ConfigError, NotFoundError, StorageError
from charhub_ops.settings import load_settings
from charhub_ops.storage import (
    LocalStorage,
    MemoryStorage,
    S3Options,
    S3Storage,
    choose_part_size,
    open_storage,
)
from charhub_ops.storage.base import MIB
from charhub_ops.storage.s3_errors import translate


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


# --- errors: every library error becomes one StorageError/ConfigError that says if it is transient ---

EXE = str(Path(sys.executable).with_name("charhub-ops"))


def run_cli(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=full_env, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _client_error(code: str, status: int) -> bce.ClientError:
    return bce.ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                           "PutObject")


def _upload_failed(cause: BaseException) -> S3UploadFailedError:
    try:
        raise S3UploadFailedError("Failed to upload") from cause
    except S3UploadFailedError as exc:
        return exc


URL = {"endpoint_url": "https://acct.r2.cloudflarestorage.com"}


@pytest.mark.parametrize(("exc", "kind", "transient"), [
    (_client_error("SlowDown", 503), StorageError, True),
    (_client_error("429", 429), StorageError, True),
    (_client_error("TooManyRequests", 429), StorageError, True),
    (_client_error("RequestTimeout", 400), StorageError, True),
    (_client_error("ThrottlingException", 400), StorageError, True),
    (_client_error("InternalError", 500), StorageError, True),
    (_client_error("ServiceUnavailable", 503), StorageError, True),
    (_client_error("", 502), StorageError, True),
    (_client_error("AccessDenied", 403), StorageError, False),
    (_client_error("InvalidPart", 400), StorageError, False),
    (_client_error("EntityTooSmall", 400), StorageError, False),
    (_client_error("NoSuchBucket", 404), StorageError, False),
    (_client_error("NoSuchKey", 404), NotFoundError, False),
    (bce.EndpointConnectionError(**URL), StorageError, True),
    (bce.ConnectTimeoutError(**URL), StorageError, True),
    (bce.ReadTimeoutError(**URL), StorageError, True),
    (bce.ConnectionClosedError(**URL), StorageError, True),
    (bce.ResponseStreamingError(error="reset"), StorageError, True),
    (bce.IncompleteReadError(actual_bytes=1, expected_bytes=2), StorageError, True),
    (ProtocolError("Connection broken"), StorageError, True),
    (bce.SSLError(error="bad cert", **URL), StorageError, False),
    (bce.NoCredentialsError(), ConfigError, False),
    (bce.ParamValidationError(report="bad key"), StorageError, False),
    (_upload_failed(_client_error("SlowDown", 503)), StorageError, True),
    (_upload_failed(_client_error("AccessDenied", 403)), StorageError, False),
], ids=lambda v: v if isinstance(v, bool) else None)
def test_s3_errors_are_classified(exc, kind, transient):
    err = translate("put", "db/1/dump", exc)
    assert type(err) is kind and err.transient is transient
    assert "\n" not in str(err) and (kind is ConfigError or str(err).startswith("s3: put db/1/dump"))


def test_endpoint_without_scheme_is_a_config_error(monkeypatch):
    monkeypatch.setenv("R2_ENDPOINT_URL", "r2.example.com")
    with pytest.raises(ConfigError, match=r"r2_endpoint_url .*'r2.example.com'.*R2_ENDPOINT_URL"):
        load_settings()
    with pytest.raises(ConfigError, match="R2_ENDPOINT_URL"):
        S3Storage("bucket-x", "", S3Options(endpoint_url="r2.example.com"))


def test_cli_endpoint_without_scheme_is_one_line():
    proc = run_cli("backups", "list", "--from", "s3://bucket-x/p", env={"R2_ENDPOINT_URL": "r2.example.com"})
    assert_one_line_error(proc, "R2_ENDPOINT_URL", "r2.example.com")


def test_s3_client_timeouts_and_attempts_come_from_settings(monkeypatch):
    assert (load_settings().storage.s3_options().timeout, load_settings().storage.s3_max_attempts) == (60.0, 5)
    monkeypatch.setenv("CHARHUB_OPS_S3_TIMEOUT", "7")
    monkeypatch.setenv("CHARHUB_OPS_S3_MAX_ATTEMPTS", "2")
    store = S3Storage("bucket-x", "", load_settings().storage.s3_options())
    config = store.client.meta.config
    assert (config.connect_timeout, config.read_timeout, config.retries["total_max_attempts"]) == (7, 7, 2)


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs: writes past it fail with ENOSPC (needs root, as in CI)."""
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_local_disk_full_is_one_permanent_error(full_disk):
    store = LocalStorage(full_disk / "repo")
    with pytest.raises(StorageError, match="No space left on device") as info:
        store.put_stream("db/1/dump", io.BytesIO(os.urandom(3 * MIB)))
    assert not info.value.transient and "\n" not in str(info.value)
    assert list(store.list()) == [] and list(store.list_partial()) == []  # the temporary file is gone


def test_cli_backup_to_a_full_disk_is_one_line(prefect_server, pg, database, full_disk):
    with pg.connect(database.rsplit("/", 1)[1]) as conn:
        conn.execute("CREATE TABLE blob AS SELECT decode(md5(random()::text), 'hex') b "
                     "FROM generate_series(1, 200000)")
    proc = run_cli("backup", "--database-url", database, "--to", f"file://{full_disk}/repo",
                   env={"PREFECT_API_URL": prefect_server})
    assert_one_line_error(proc, "No space left on device")
