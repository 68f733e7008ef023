"""S3 fault drills against a real S3 server over HTTP, paused with SIGSTOP (its own server, so pausing it
does not disturb other tests): a stall shorter than the timeout is ridden out; a longer one becomes one
clear, transient StorageError (CLI: one line), leaves no backup, and the next run succeeds."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from charhub_ops import progress
from charhub_ops.backup.catalog import list_backups
from charhub_ops.errors import StorageError
from charhub_ops.retention.policy import RetentionPolicy
from charhub_ops.retention.prune import execute_prune, plan_prune, scan_repository
from charhub_ops.storage import S3Options, S3Storage
from charhub_ops.storage.base import MIB
from tests.harness.restore import fetch_dump, pg_restore
from tests.harness.schema import table_hashes
from tests.harness.services import S3Server, start_s3_server
from tests.test_storage_contract import assert_one_line_error, run_cli


class Pausable:
    """This module's S3 server, with SIGSTOP/SIGCONT. The server is always resumed at teardown."""

    def __init__(self, server: S3Server) -> None:
        self.server, self.endpoint = server, server.endpoint
        self.client = boto3.client("s3", endpoint_url=server.endpoint)

    def pause(self) -> None:
        os.kill(self.server.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.server.process.pid, signal.SIGCONT)

    def new_bucket(self) -> str:
        name = f"drill-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="module")
def s3():
    server = start_s3_server()
    try:
        yield Pausable(server)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def endpoint(s3, monkeypatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)
    return s3.endpoint


@pytest.fixture(scope="module")
def big_db(pg) -> str:
    """~40 MB of pg_dump output that zstd only halves: four 5 MiB parts."""
    url = pg.create_database("drill_" + uuid.uuid4().hex[:8])
    with pg.connect(url.rsplit("/", 1)[1]) as conn:
        conn.execute("CREATE TABLE blob AS SELECT i, decode(md5(random()::text) || md5(i::text), 'hex') b "
                     "FROM generate_series(1, 600000) i")
    return url


class StallMidUpload:
    """A progress listener that pauses the server once a multipart upload has at least one part
    stored (the backup is then certainly mid-upload), and resumes it ``resume_after`` s later."""

    def __init__(self, s3: Pausable, bucket: str, resume_after: float | None) -> None:
        self.s3, self.bucket, self.resume_after = s3, bucket, resume_after
        self.upload_id: str | None = None
        self.bytes_after = 0
        self.lock = threading.Lock()

    def __call__(self, name: str, n: int, total: int | None) -> None:
        with self.lock:
            if self.upload_id:
                self.bytes_after += n
                return
            for up in self.s3.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []):
                if self.s3.client.list_parts(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]).get("Parts"):
                    self.upload_id = up["UploadId"]
                    self.s3.pause()
                    if self.resume_after is not None:
                        threading.Timer(self.resume_after, self.s3.resume).start()

    def __enter__(self) -> StallMidUpload:
        progress.subscribe(self)
        return self

    def __exit__(self, *exc) -> None:
        progress.unsubscribe(self)


def _drill_env(monkeypatch, big_db: str) -> None:
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", big_db)
    monkeypatch.setenv("CHARHUB_OPS_PART_SIZE_MIB", "5")
    monkeypatch.setenv("CHARHUB_OPS_UPLOAD_CONCURRENCY", "1")


def test_a_5s_stall_mid_upload_is_ridden_out(prefect_server, s3, endpoint, big_db, pg, tmp_path, monkeypatch):
    from flows.backup import backup_flow

    _drill_env(monkeypatch, big_db)
    bucket = s3.new_bucket()
    with StallMidUpload(s3, bucket, resume_after=5.0) as stall:
        (summary,) = backup_flow(repository=f"s3://{bucket}/db")
    assert stall.upload_id and stall.bytes_after > 0  # paused mid-upload, and the dump went on afterwards
    storage = S3Storage(bucket, "db")
    (manifest,) = list_backups(storage)
    assert manifest.backup_id == summary["backup_id"] and manifest.stored_size_bytes > 3 * 5 * MIB
    assert list(storage.list_incomplete_uploads()) == []
    dump = fetch_dump(storage, manifest, tmp_path / "dump.pgc")  # checks the SHA-256 and the size
    target = pg.create_database("drill_restored_" + uuid.uuid4().hex[:8])
    pg_restore(pg.bin, target, dump)
    assert table_hashes(target) == table_hashes(big_db)


def test_an_outage_longer_than_the_retries_fails_once_cleanly(prefect_server, s3, endpoint, big_db, monkeypatch):
    from flows.backup import backup_flow

    _drill_env(monkeypatch, big_db)
    for name, value in {"S3_TIMEOUT": "1", "S3_MAX_ATTEMPTS": "2", "TASK_RETRIES": "0"}.items():
        monkeypatch.setenv(f"CHARHUB_OPS_{name}", value)
    bucket = s3.new_bucket()
    try:
        with StallMidUpload(s3, bucket, resume_after=None) as stall, pytest.raises(StorageError) as info:
            backup_flow(repository=f"s3://{bucket}/db")
    finally:
        s3.resume()
    assert stall.upload_id
    assert info.value.transient and str(info.value).startswith("s3: ") and "\n" not in str(info.value)
    storage = S3Storage(bucket, "db")
    assert list_backups(storage) == [] and not [o for o in storage.list() if o.key.endswith("manifest.json")]
    # the upload was aborted when the server came back, or prune aborts it once it is stale
    left = {u for _, u, _ in storage.list_incomplete_uploads()}
    plan = plan_prune(scan_repository(storage), RetentionPolicy(keep_last=1), datetime.now(UTC) + timedelta(days=2))
    assert left <= {u.upload_id for u in plan.uploads}
    execute_prune(storage, plan)
    assert list(storage.list_incomplete_uploads()) == []

    for name in ("S3_TIMEOUT", "S3_MAX_ATTEMPTS"):
        monkeypatch.delenv(f"CHARHUB_OPS_{name}")
    (summary,) = backup_flow(repository=f"s3://{bucket}/db")
    assert [m.backup_id for m in list_backups(storage)] == [summary["backup_id"]]


def test_a_stalled_server_is_one_cli_error_after_the_timeout(s3, endpoint):
    bucket = s3.new_bucket()
    s3.pause()
    try:
        proc = run_cli("backups", "list", "--from", f"s3://{bucket}/db", timeout=60,
                       env={"CHARHUB_OPS_S3_TIMEOUT": "1", "CHARHUB_OPS_S3_MAX_ATTEMPTS": "1"})
    finally:
        s3.resume()
    assert "timeout" in assert_one_line_error(proc, "s3: list db/").lower()


def test_a_body_that_stops_mid_read_is_a_transient_storage_error(s3, endpoint):
    bucket = s3.new_bucket()
    s3.client.put_object(Bucket=bucket, Key="big", Body=os.urandom(48 * MIB))
    store = S3Storage(bucket, "", S3Options(timeout=1, max_attempts=1))
    stream = store.open("big")
    assert len(stream.read(MIB)) == MIB
    s3.pause()
    try:
        with pytest.raises(StorageError, match="s3: read big") as info:
            while stream.read(MIB):
                pass
    finally:
        s3.resume()
    assert info.value.transient
