"""Restore and restore drills against real PostgreSQL, the S3 server and Docker."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import docker
import psycopg
import pytest
from pyrage import x25519

from charhub_ops.backup.catalog import list_backups, list_backups_verified
from charhub_ops.backup.manifest import Manifest, ObjectRef
from charhub_ops.errors import ConfigError, NotFoundError, VerificationError
from charhub_ops.restore.datapath import fetch_verified
from charhub_ops.restore.engine import pick_backup
from charhub_ops.storage import LocalStorage, S3Storage
from tests.harness.schema import create_varied_schema, table_hashes


def _manifest(backup_id: str, started: datetime) -> Manifest:
    ref = ObjectRef(key="k", size_bytes=1, sha256="0" * 64)
    return Manifest(backup_id=backup_id, database="db", server_version="16.4", server_version_num=160004,
                    pg_dump_version="pg_dump (PostgreSQL) 16.4", dump_method="local", started_at=started,
                    finished_at=started, database_size_bytes=1, raw_size_bytes=1, stored_size_bytes=1,
                    sha256="0" * 64, dump=ref, tool_version="t")


T0 = datetime(2026, 11, 20, 2, 30, tzinfo=UTC)
HISTORY = [_manifest(f"b{i}", T0 - timedelta(days=i)) for i in range(3)]  # newest first


@pytest.mark.parametrize(("backup", "before", "expected"), [
    ("latest", None, "b0"),
    ("b2", None, "b2"),
    ("latest", T0 - timedelta(hours=1), "b1"),
    ("latest", T0 - timedelta(days=1), "b1"),          # at or before
    ("latest", T0 + timedelta(days=9), "b0"),
])
def test_pick_backup(backup, before, expected):
    assert pick_backup(HISTORY, backup, before).backup_id == expected


@pytest.mark.parametrize(("backup", "before"), [("nope", None), ("latest", T0 - timedelta(days=5))])
def test_pick_backup_not_found(backup, before):
    with pytest.raises(NotFoundError):
        pick_backup(HISTORY, backup, before)


@pytest.fixture
def backed_up(prefect_server, pg, database, bucket, monkeypatch):
    """A varied database backed up to S3; returns (source url, storage, manifest)."""
    from flows.backup import backup_flow

    create_varied_schema(database, rows=200)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", database)
    backup_flow(repository=f"s3://{bucket}/r")
    storage = S3Storage(bucket, "r")
    (manifest,) = list_backups(storage)
    return database, storage, manifest


def _server_url(pg, name: str) -> str:
    return pg.url(name)


def _exists(pg, name: str) -> bool:
    with pg.connect() as conn:
        return bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone())


def test_restore_round_trip_checks_rows_and_hashes(backed_up, pg, monkeypatch, bucket):
    from flows.restore import restore_flow

    source, _, manifest = backed_up
    target = "copy_" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", _server_url(pg, target))
    result = restore_flow(repository=f"s3://{bucket}/r", target={"target_database": target})
    assert result["backup_id"] == manifest.backup_id and result["ok"] and result["database"] == target
    assert result["tables"] == 3 and result["hashed_tables"] == 3 and result["rows"] == 200 + 600 + 200
    assert table_hashes(pg.url(target)) == table_hashes(source)


def test_existing_target_is_refused_before_download(backed_up, pg, monkeypatch, bucket):
    from flows.restore import restore_flow

    source, _, _ = backed_up
    existing = source.rsplit("/", 1)[1]
    before = table_hashes(source)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", source)
    with pytest.raises(ConfigError, match="already exists"):
        restore_flow(repository=f"s3://{bucket}/r", target={"target_database": existing})
    assert table_hashes(source) == before


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_object_is_refused_before_the_server_is_touched(backed_up, pg, monkeypatch, bucket, damage):
    from flows.restore import restore_flow

    _, storage, manifest = backed_up
    data = bytearray(storage.get_bytes(manifest.dump.key))
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    storage.put_bytes(manifest.dump.key, bytes(data))
    target = "never_" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", _server_url(pg, target))
    with pytest.raises(VerificationError):
        restore_flow(repository=f"s3://{bucket}/r", target={"target_database": target})
    assert not _exists(pg, target)


def test_wrong_identity_is_refused_before_the_server_is_touched(prefect_server, pg, database, tmp_path, monkeypatch):
    from flows.backup import backup_flow
    from flows.restore import restore_flow

    create_varied_schema(database, rows=20)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", database)
    right, wrong = x25519.Identity.generate(), x25519.Identity.generate()
    backup_flow(repository=f"file://{tmp_path}/repo", encrypt_to=[str(right.to_public())])
    (tmp_path / "wrong.key").write_text(f"# wrong\n{wrong}\n")
    (tmp_path / "right.key").write_text(f"{right}\n")
    target = "enc_" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", _server_url(pg, target))
    with pytest.raises(VerificationError, match="wrong identity"):
        restore_flow(repository=f"file://{tmp_path}/repo", target={"target_database": target},
                     decryption={"identity_file": str(tmp_path / "wrong.key")})
    assert not _exists(pg, target)
    with pytest.raises(ConfigError, match="--identity"):
        restore_flow(repository=f"file://{tmp_path}/repo", target={"target_database": target})
    result = restore_flow(repository=f"file://{tmp_path}/repo", target={"target_database": target},
                          decryption={"identity_file": str(tmp_path / "right.key")})
    assert result["ok"] and table_hashes(pg.url(target)) == table_hashes(database)


def test_fetch_verified_removes_partial_output(tmp_path):
    storage = LocalStorage(tmp_path / "repo")
    storage.put_bytes("db/x/dump", b"not zstd at all")
    m = _manifest("x", T0)
    m.dump = ObjectRef(key="db/x/dump", size_bytes=15, sha256="0" * 64)
    with pytest.raises(VerificationError):
        fetch_verified(storage, m, tmp_path / "out.pgc")
    assert not (tmp_path / "out.pgc").exists()


def test_verify_records_the_verdict_and_drops_the_scratch_database(backed_up, pg, monkeypatch, bucket):
    from flows.verify import verify_flow

    _, storage, manifest = backed_up
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg.url("postgres"))
    result = verify_flow(repository=f"s3://{bucket}/r")
    assert result["ok"] and result["backup_id"] == manifest.backup_id and result["mismatches"] == []
    assert result["hashed_tables"] == 3
    ((m, verdict),) = list_backups_verified(storage)
    assert verdict.ok and verdict.verified_at
    with pg.connect() as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE '%\\_verify\\_%'").fetchall()
    assert left == []


def test_verify_failure_is_recorded_and_raised(backed_up, pg, monkeypatch, bucket):
    from flows.verify import verify_flow

    _, storage, manifest = backed_up
    bad = manifest.model_copy(deep=True)
    bad.tables[0].rows += 1  # the manifest now disagrees with the dump
    storage.put_bytes(f"{manifest.database}/{manifest.backup_id}/manifest.json", bad.model_dump_json().encode())
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg.url("postgres"))
    with pytest.raises(VerificationError) as info:
        verify_flow(repository=f"s3://{bucket}/r")
    assert info.value.details["ok"] is False and info.value.details["mismatches"]
    ((_, verdict),) = list_backups_verified(storage)
    assert verdict.ok is False


@pytest.mark.docker
def test_replace_swaps_in_the_copy_and_keeps_the_old_database(backed_up, pg, monkeypatch, bucket, app_container):
    from flows.restore import restore_flow

    source, _, manifest = backed_up
    live = source.rsplit("/", 1)[1]
    expected = table_hashes(source)
    with pg.connect(live) as conn:
        conn.execute('DELETE FROM "UsageLog"')  # the "incident" the restore repairs
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", source)
    monkeypatch.setenv("CHARHUB_OPS_APP_CONTAINERS", app_container)
    result = restore_flow(repository=f"s3://{bucket}/r", target={"replace": True})
    assert result["replaced"] and result["database"] == live
    assert table_hashes(source) == expected
    old = result["previous_database"]
    with pg.connect(old) as conn:
        assert conn.execute('SELECT count(*) FROM "UsageLog"').fetchone()[0] == 0
    assert result["safety_backup_id"] != manifest.backup_id
    assert docker.from_env().containers.get(app_container).status == "running"


@pytest.mark.docker
def test_failed_swap_is_rolled_back(backed_up, pg, monkeypatch, bucket, app_container):
    from flows.restore import restore_flow

    source, _, _ = backed_up
    live = source.rsplit("/", 1)[1]
    with pg.connect(live) as conn:
        conn.execute('DELETE FROM "UsageLog"')
    before = table_hashes(source)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", source)
    monkeypatch.setenv("CHARHUB_OPS_APP_CONTAINERS", app_container)
    stop = threading.Event()
    holder = threading.Thread(target=_hold_connection_to_restored_copy, args=(pg, live, stop), daemon=True)
    holder.start()  # the rename restored → live then fails: "being accessed by other users"
    try:
        with pytest.raises(Exception, match="being accessed by other users"):
            restore_flow(repository=f"s3://{bucket}/r", target={"replace": True})
    finally:
        stop.set()
        holder.join()
    assert table_hashes(source) == before  # the original database is back under its name, untouched
    with pg.connect() as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
        allowed = conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (live,)).fetchone()[0]
    assert not any(n.startswith(f"{live}_pre_restore_") for n in names)
    assert allowed
    assert docker.from_env().containers.get(app_container).status == "running"


def _hold_connection_to_restored_copy(pg, live: str, stop: threading.Event) -> None:
    conn = None
    while not stop.is_set():
        if conn is None:
            with pg.connect() as admin:
                row = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s AND datallowconn",
                                    (f"{live}\\_restore\\_%",)).fetchone()
            if row:
                try:
                    conn = psycopg.connect(pg.url(row[0]), autocommit=True)
                except psycopg.OperationalError:
                    conn = None
        time.sleep(0.02)
    if conn is not None:
        conn.close()


@pytest.mark.docker
def test_restore_and_verify_through_a_postgres_container(prefect_server, pg_container, tmp_path, monkeypatch):
    from flows.backup import backup_flow
    from flows.restore import restore_flow
    from flows.verify import verify_flow
    from tests.harness.schema import VARIED_SCHEMA, fill_sql

    src = "src_" + uuid.uuid4().hex[:6]
    pg_container.psql(f"CREATE DATABASE {src}")
    pg_container.psql(VARIED_SCHEMA + fill_sql(50), dbname=src)
    socket_url = "postgresql://postgres@/{}?host=/var/run/postgresql"
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", socket_url.format(src))
    repo = f"file://{tmp_path}/repo"
    backup_flow(repository=repo, access={"docker_container": pg_container.name})
    target = "dst_" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", socket_url.format(target))
    result = restore_flow(repository=repo, target={"target_database": target},
                          access={"docker_container": pg_container.name})
    assert result["ok"] and result["rows"] == 50 + 150 + 50 and result["hashed_tables"] == 3
    count = 'SELECT count(*) FROM "UsageLog"'
    assert pg_container.psql(count, dbname=target).strip() == pg_container.psql(count, dbname=src).strip() == "150"
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", socket_url.format("postgres"))
    assert verify_flow(repository=repo, access={"docker_container": pg_container.name})["ok"]


@pytest.mark.parametrize(("existing", "expected_roles"), [
    (set(), ["charhub", "Read Only"]),
    ({"charhub"}, ["Read Only"]),
    ({"charhub", "Read Only"}, []),
])
def test_missing_roles_sql_never_alters_existing_roles(existing, expected_roles):
    from charhub_ops.restore.engine import missing_roles_sql

    dumped = "\n".join([
        "--", "-- Roles", "--", "", "CREATE ROLE charhub;",
        "ALTER ROLE charhub WITH SUPERUSER INHERIT LOGIN PASSWORD 'SCRAM-SHA-256$4096:x';",
        'CREATE ROLE "Read Only";', 'ALTER ROLE "Read Only" WITH NOSUPERUSER LOGIN;',
        'GRANT "Read Only" TO charhub GRANTED BY postgres;', ""])
    script, roles = missing_roles_sql(dumped, existing)
    assert roles == expected_roles
    for name in ("charhub", '"Read Only"'):
        touched = f"ROLE {name};" in script or f"ROLE {name} " in script
        assert touched == (name.strip('"') in expected_roles)
    assert "GRANT" not in script


def test_with_globals_recreates_a_missing_owner_role(prefect_server, pg, database, tmp_path, monkeypatch):
    from flows.backup import backup_flow
    from flows.restore import restore_flow

    role = "owner_" + uuid.uuid4().hex[:6]
    with pg.connect(database.rsplit("/", 1)[1]) as conn:
        conn.execute(f"CREATE ROLE {role}; CREATE TABLE owned (x int); ALTER TABLE owned OWNER TO {role}")
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", database)
    backup_flow(repository=f"file://{tmp_path}/repo")
    with pg.connect(database.rsplit("/", 1)[1]) as conn:
        conn.execute(f"REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}; DROP ROLE {role}")
    target = "roles_" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg.url(target))
    restore_flow(repository=f"file://{tmp_path}/repo", target={"target_database": target, "with_globals": True})
    with pg.connect(target) as conn:
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'owned'").fetchone()[0]
    assert owner == role
