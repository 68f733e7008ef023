"""Faults on the restore path, against real PostgreSQL and a real repository: a read failing half-way
(encrypted or not, both restore modes, with and without retries), a checksum that only fails at the end of
a streamed restore, pg_restore refusing a dump, a scratch name already taken, concurrent work files, and
a work dir too small for the dump (a 2 MB tmpfs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
import zstandard
from pyrage import x25519

from charhub_ops.backup.catalog import list_backups, list_backups_verified
from charhub_ops.backup.manifest import Manifest, manifest_key
from charhub_ops.errors import ConfigError, StorageError, VerificationError
from charhub_ops.restore.datapath import fetch_verified, work_file
from charhub_ops.restore.engine import load_identities
from charhub_ops.storage import LocalStorage
from tasks.common import RepoSpec
from tests.harness.schema import create_varied_schema, table_hashes


class _Cut:
    """A real object stream that raises a transient StorageError (a connection reset) after ``at`` bytes."""

    def __init__(self, stream, at: int) -> None:
        self.stream, self.left = stream, at

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            raise StorageError("s3: get dump: connection reset by peer (injected)", transient=True)
        data = self.stream.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FlakyStorage:
    """The real local repository, whose dump object breaks off after ``at`` bytes the first ``times`` reads."""

    def __init__(self, root: Path, key: str, at: int, times: int = 1) -> None:
        self.inner, self.key, self.at, self.times = LocalStorage(root), key, at, times
        self.opens = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def open(self, key: str):
        stream = self.inner.open(key)
        if key != self.key:
            return stream
        self.opens += 1
        return _Cut(stream, self.at) if self.opens <= self.times else stream


def _backup(pg, repo: Path, encrypt_to: str | None = None, filler_rows: int = 0) -> tuple[str, Manifest]:
    """A varied database (plus a ``filler`` table of ~75 bytes a row) backed up into ``repo``."""
    from flows.backup import backup_flow

    url = pg.create_database("src_" + uuid.uuid4().hex[:8])
    create_varied_schema(url, rows=100)
    if filler_rows:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE filler AS SELECT g, md5(g::text) || md5((g * 7)::text) AS t "
                         f"FROM generate_series(1, {filler_rows}) g")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARHUB_OPS_DATABASE_URL", url)
        backup_flow(repository=f"file://{repo}", **({"encrypt_to": [encrypt_to]} if encrypt_to else {}))
    (manifest,) = list_backups(LocalStorage(repo))
    return url, manifest


@pytest.fixture(scope="module")
def encrypted(prefect_server, pg, tmp_path_factory):
    """(source url, repository dir, manifest, identity file) of one age-encrypted backup."""
    base = tmp_path_factory.mktemp("encrypted")
    identity = x25519.Identity.generate()
    (base / "id.key").write_text(f"{identity}\n")
    url, manifest = _backup(pg, base / "repo", encrypt_to=str(identity.to_public()))
    return url, base / "repo", manifest, base / "id.key"


@pytest.fixture(scope="module")
def plain(prefect_server, pg, tmp_path_factory):
    """(source url, repository dir, manifest) of an unencrypted backup whose raw dump is > 2 MB."""
    repo = tmp_path_factory.mktemp("plain") / "repo"
    url, manifest = _backup(pg, repo, filler_rows=40_000)
    assert manifest.raw_size_bytes > 2 * 1024 * 1024
    return url, repo, manifest


def _copy(repo: Path, tmp_path: Path) -> Path:
    shutil.copytree(repo, tmp_path / "repo")
    return tmp_path / "repo"


def _event(api: str, name: str, resource: str, since: datetime) -> dict:
    """The first event ``name`` about ``resource`` since ``since`` (the server stores them asynchronously)."""
    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [resource]},
                       "occurred": {"since": since.isoformat()}, "order": "ASC"}, "limit": 5}
    deadline = time.monotonic() + 30
    while not (events := httpx.post(f"{api}/events/filter", json=body, timeout=10).raise_for_status()
               .json()["events"]) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert events, f"no {name} event for {resource}"
    return events[0]


def _exists(pg, name: str) -> bool:
    with pg.connect() as conn:
        return bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone())


def _databases(pg, like: str) -> set[str]:
    with pg.connect() as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (like,))}


# --- defect 7: a transport error during an encrypted restore is not a wrong identity -----------------------


@pytest.mark.parametrize("where", ["in the age header", "half-way"])
def test_transient_read_error_during_decryption_stays_a_transient_storage_error(encrypted, tmp_path, where):
    _, repo, manifest, key = encrypted
    at = 10 if where == "in the age header" else manifest.stored_size_bytes // 2
    storage = FlakyStorage(repo, manifest.dump.key, at)
    dest = tmp_path / "dump.pgc"
    with pytest.raises(StorageError) as info:
        fetch_verified(storage, manifest, dest, load_identities(str(key)))
    assert info.value.transient and "identity" not in str(info.value) and "injected" in str(info.value)
    assert not dest.exists()


@pytest.mark.parametrize(("mode", "retries"), [("stream", 1), ("file", 1), ("stream", 0)])
def test_encrypted_restore_retries_a_read_that_broke_off(encrypted, pg, tmp_path, monkeypatch, mode, retries):
    from flows.restore import restore_flow

    source, repo, manifest, key = encrypted
    flaky = FlakyStorage(repo, manifest.dump.key, manifest.stored_size_bytes // 2)
    monkeypatch.setattr(RepoSpec, "open", lambda self: flaky)
    monkeypatch.setenv("CHARHUB_OPS_RESTORE_MODE", mode)
    monkeypatch.setenv("CHARHUB_OPS_WORK_DIR", str(tmp_path))
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRIES", str(retries))
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRY_DELAY", "0.1")
    target = "enc_" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg.url(target))
    if retries == 0:
        with pytest.raises(StorageError, match="injected") as info:
            restore_flow(repository=f"file://{repo}", target={"target_database": target},
                         decryption={"identity_file": str(key)})
        assert info.value.transient and not _exists(pg, target)  # the half-restored database was dropped
    else:
        result = restore_flow(repository=f"file://{repo}", target={"target_database": target},
                              decryption={"identity_file": str(key)})
        assert result["ok"] and flaky.opens == 2
        assert table_hashes(pg.url(target)) == table_hashes(source)
    assert list(tmp_path.iterdir()) == []  # no work file left behind


# --- streaming: the checksum is checked at the end, and a mismatch drops the new database ----------------


def test_streamed_restore_with_a_wrong_checksum_is_dropped_after_pg_restore(plain, pg, tmp_path, monkeypatch):
    from flows.restore import restore_flow

    _, repo, manifest = plain
    repo = _copy(repo, tmp_path)
    bad = manifest.model_copy(deep=True)
    bad.dump.sha256 = bad.sha256 = "0" * 64  # the data is a good dump: only the final check can tell
    LocalStorage(repo).put_bytes(manifest_key(bad.database, bad.backup_id), bad.model_dump_json().encode())
    monkeypatch.setenv("CHARHUB_OPS_RESTORE_MODE", "stream")
    target = "sum_" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg.url(target))
    with pytest.raises(VerificationError, match="checksum mismatch"):
        restore_flow(repository=f"file://{repo}", target={"target_database": target})
    assert not _exists(pg, target)


# --- defect 6: every failed drill that shows the backup bad records a verdict ------------------------------


def _garbage_dump(repo: Path, manifest: Manifest) -> None:
    """Replace the dump by a valid zstd stream of garbage, with a manifest that matches it byte for byte."""
    import hashlib

    data = zstandard.ZstdCompressor().compress(b"this is not a pg_dump archive\n" * 5000)
    storage = LocalStorage(repo)
    storage.put_bytes(manifest.dump.key, data)
    bad = manifest.model_copy(deep=True)
    bad.dump.size_bytes = bad.stored_size_bytes = len(data)
    bad.dump.sha256 = bad.sha256 = hashlib.sha256(data).hexdigest()
    storage.put_bytes(manifest_key(bad.database, bad.backup_id), bad.model_dump_json().encode())


@pytest.mark.parametrize("mode", ["stream", "file"])
def test_verify_records_a_pg_restore_failure(plain, pg, prefect_server, tmp_path, monkeypatch, mode):
    from flows.verify import VERIFICATION_FAILED, verify_flow

    _, repo, manifest = plain
    repo = _copy(repo, tmp_path)
    _garbage_dump(repo, manifest)
    monkeypatch.setenv("CHARHUB_OPS_RESTORE_MODE", mode)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg.url("postgres"))
    since = datetime.now(UTC)
    with pytest.raises(VerificationError) as info:
        verify_flow(repository=f"file://{repo}")
    assert info.value.details["ok"] is False and "pg_restore" in info.value.details["mismatches"][0]
    ((_, verdict),) = list_backups_verified(LocalStorage(repo))
    assert verdict.ok is False and "pg_restore" in verdict.mismatches[0]
    event = _event(prefect_server, VERIFICATION_FAILED, f"charhub.database.{manifest.database}", since)
    assert event["payload"]["backup_id"] == manifest.backup_id and event["payload"]["verdict_recorded"] is True
    assert not _databases(pg, f"{manifest.database}\\_verify\\_%")


def test_verify_never_drops_a_scratch_name_it_did_not_create(plain, pg, prefect_server, tmp_path, monkeypatch):
    """CREATE DATABASE is refused (the name exists): nothing is dropped, and the backup is not branded."""
    from flows.verify import VERIFICATION_FAILED, verify_flow

    _, repo, manifest = plain
    repo = _copy(repo, tmp_path)
    now = datetime.now(UTC)
    taken = {f"{manifest.database}_verify_{now + timedelta(seconds=s):%Y%m%d%H%M%S}"[:63] for s in range(40)}
    for name in taken:  # every scratch name of the next 40 s: the drill's is among them
        pg.create_database(name)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg.url("postgres"))
    since = datetime.now(UTC)
    try:
        with pytest.raises(ConfigError, match="already exists"):
            verify_flow(repository=f"file://{repo}")
        assert _databases(pg, f"{manifest.database}\\_verify\\_%") == taken
    finally:
        with pg.connect() as conn:
            for name in taken:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    ((_, verdict),) = list_backups_verified(LocalStorage(repo))
    assert verdict is None
    event = _event(prefect_server, VERIFICATION_FAILED, f"charhub.database.{manifest.database}", since)
    assert event["payload"]["verdict_recorded"] is False and "already exists" in event["payload"]["error"]


def test_verify_during_a_repository_outage_brands_nothing(encrypted, pg, prefect_server, tmp_path, monkeypatch):
    from flows.verify import VERIFICATION_FAILED, verify_flow

    _, repo, manifest, key = encrypted
    repo = _copy(repo, tmp_path)
    flaky = FlakyStorage(repo, manifest.dump.key, at=0, times=99)
    monkeypatch.setattr(RepoSpec, "open", lambda self: flaky)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg.url("postgres"))
    since = datetime.now(UTC)
    with pytest.raises(StorageError) as info:
        verify_flow(repository=f"file://{repo}", decryption={"identity_file": str(key)})
    assert info.value.transient
    ((_, verdict),) = list_backups_verified(LocalStorage(repo))
    assert verdict is None  # the next drill picks this backup again
    assert not _databases(pg, f"{manifest.database}\\_verify\\_%")
    event = _event(prefect_server, VERIFICATION_FAILED, f"charhub.database.{manifest.database}", since)
    assert event["payload"]["verdict_recorded"] is False and "injected" in event["payload"]["error"]


# --- defect 8: concurrent restores of one backup never share a work file ----------------------------------


def test_file_mode_never_touches_another_restores_work_file(plain, pg, tmp_path, monkeypatch):
    from flows.restore import restore_flow

    _, repo, manifest = plain
    work = tmp_path / "work"
    work.mkdir()
    other = work / f"charhub-ops-{manifest.backup_id}.pgc"  # the name every restore of it used to share
    other.write_bytes(b"another restore's dump, half written")
    first, second = (work_file(str(work), manifest.backup_id, ".pgc") for _ in range(2))
    assert first != second and other not in (first, second)
    first.unlink()
    second.unlink()
    monkeypatch.setenv("CHARHUB_OPS_RESTORE_MODE", "file")
    monkeypatch.setenv("CHARHUB_OPS_WORK_DIR", str(work))
    target = "conc_" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg.url(target))
    assert restore_flow(repository=f"file://{repo}", target={"target_database": target})["ok"]
    assert list(work.iterdir()) == [other] and other.read_bytes() == b"another restore's dump, half written"


# --- fault drill: the work dir is too small for the dump ----------------------------------------------------


@pytest.fixture
def tiny_work_dir(tmp_path):
    """A 2 MB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path = tmp_path / "tiny"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], check=True)
    yield path
    subprocess.run(["umount", str(path)], check=True)


def test_file_mode_refuses_a_small_work_dir_before_creating_the_database(plain, pg, tiny_work_dir, monkeypatch):
    from flows.restore import restore_flow

    _, repo, _ = plain
    monkeypatch.setenv("CHARHUB_OPS_RESTORE_MODE", "file")
    monkeypatch.setenv("CHARHUB_OPS_WORK_DIR", str(tiny_work_dir))
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRIES", "2")  # a full disk is permanent: no retry may happen
    target = "full_" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg.url(target))
    with pytest.raises(ConfigError) as info:
        restore_flow(repository=f"file://{repo}", target={"target_database": target})
    message = str(info.value)
    assert "CHARHUB_OPS_WORK_DIR" in message and "\n" not in message and not info.value.transient
    assert not _exists(pg, target) and list(tiny_work_dir.iterdir()) == []


def test_disk_full_while_writing_the_work_file_is_one_permanent_error(plain, tiny_work_dir):
    _, repo, manifest = plain
    dest = work_file(str(tiny_work_dir), manifest.backup_id, ".pgc")
    with pytest.raises(ConfigError, match="CHARHUB_OPS_WORK_DIR") as info:
        fetch_verified(LocalStorage(repo), manifest, dest)  # no space check here: ENOSPC itself
    assert "No space left on device" in str(info.value) and not info.value.transient
    assert list(tiny_work_dir.iterdir()) == []


def test_auto_mode_streams_past_a_small_work_dir(plain, pg, tiny_work_dir, monkeypatch):
    from flows.restore import restore_flow

    source, repo, _ = plain
    monkeypatch.setenv("CHARHUB_OPS_RESTORE_MODE", "auto")
    monkeypatch.setenv("CHARHUB_OPS_RESTORE_JOBS", "4")  # enough jobs for a file: only the space decides
    monkeypatch.setenv("CHARHUB_OPS_WORK_DIR", str(tiny_work_dir))
    target = "auto_" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg.url(target))
    assert restore_flow(repository=f"file://{repo}", target={"target_database": target})["ok"]
    assert table_hashes(pg.url(target)) == table_hashes(source)


# --- the same faults streamed into a container's pg_restore -------------------------------------------------

SOCKET_URL = "postgresql://postgres@/{}?host=/var/run/postgresql"


@pytest.fixture
def container_backup(prefect_server, pg_container, tmp_path, monkeypatch):
    """(repository dir, manifest) of a backup made inside the container."""
    from flows.backup import backup_flow
    from tests.harness.schema import VARIED_SCHEMA, fill_sql

    src = "src_" + uuid.uuid4().hex[:6]
    pg_container.psql(f"CREATE DATABASE {src}")
    pg_container.psql(VARIED_SCHEMA + fill_sql(30), dbname=src)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", SOCKET_URL.format(src))
    backup_flow(repository=f"file://{tmp_path}/repo", access={"docker_container": pg_container.name})
    (manifest,) = list_backups(LocalStorage(tmp_path / "repo"))
    return tmp_path / "repo", manifest


def _container_databases(pg_container, like: str) -> str:
    return pg_container.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '{like}'").strip()


@pytest.mark.docker
def test_container_drill_records_a_pg_restore_failure(container_backup, pg_container, monkeypatch):
    from flows.verify import verify_flow

    repo, manifest = container_backup
    _garbage_dump(repo, manifest)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", SOCKET_URL.format("postgres"))
    with pytest.raises(VerificationError) as info:
        verify_flow(repository=f"file://{repo}", access={"docker_container": pg_container.name})
    assert "pg_restore" in info.value.details["mismatches"][0]
    ((_, verdict),) = list_backups_verified(LocalStorage(repo))
    assert verdict.ok is False
    assert _container_databases(pg_container, "%\\_verify\\_%") == "0"


@pytest.mark.docker
def test_container_restore_cut_off_half_way_fails_cleanly(container_backup, pg_container, monkeypatch):
    from flows.restore import restore_flow

    repo, manifest = container_backup
    flaky = FlakyStorage(repo, manifest.dump.key, manifest.stored_size_bytes // 2, times=99)
    monkeypatch.setattr(RepoSpec, "open", lambda self: flaky)
    target = "cut_" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", SOCKET_URL.format(target))
    with pytest.raises(StorageError, match="injected") as info:
        restore_flow(repository=f"file://{repo}", target={"target_database": target},
                     access={"docker_container": pg_container.name})
    assert info.value.transient and _container_databases(pg_container, target) == "0"
