"""The backup flow end to end against real PostgreSQL, a real S3 server and Prefect's test server."""

from __future__ import annotations

import json
import uuid

import pytest
from pyrage import x25519

from charhub_ops.backup.catalog import list_backups
from charhub_ops.storage import LocalStorage, S3Storage
from tests.harness.restore import fetch_dump, pg_restore
from tests.harness.schema import create_varied_schema, table_hashes
from tests.harness.webhook import notification_hook


@pytest.fixture
def varied_db(pg, database, monkeypatch):
    create_varied_schema(database, rows=300)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", database + "?schema=public")  # Prisma form
    return database


def _restore_and_compare(pg, storage, manifest, source_url, tmp_path, identities=None):
    dump = fetch_dump(storage, manifest, tmp_path / "dump.pgc", identities)
    target = pg.create_database("restored_" + uuid.uuid4().hex[:8])
    pg_restore(pg.bin, target, dump)
    assert table_hashes(target) == table_hashes(source_url)


def test_backup_to_s3_round_trip(prefect_server, varied_db, bucket, pg, tmp_path):
    from flows.backup import backup_flow

    (summary,) = backup_flow(repository=f"s3://{bucket}/backups/prod")
    assert summary["key"].startswith(f"s3://{bucket}/backups/prod/")
    storage = S3Storage(bucket, "backups/prod")
    (manifest,) = list_backups(storage)
    assert manifest.backup_id == summary["backup_id"] and manifest.sha256 == summary["sha256"]
    source = {k: v for k, v in table_hashes(varied_db).items() if not k.startswith(("sequence", "view"))}
    assert {f"{t.schema_name}.{t.name}": (t.rows, t.content_hash) for t in manifest.tables} == source
    assert manifest.globals is not None and storage.stat(manifest.globals.key).size == manifest.globals.size_bytes
    assert manifest.encryption is None and manifest.compression["algorithm"] == "zstd"
    _restore_and_compare(pg, storage, manifest, varied_db, tmp_path)
    event = _wait_for_event(prefect_server, "charhub.backup.completed", f"charhub.database.{manifest.database}")
    assert event["payload"]["backup_id"] == manifest.backup_id and event["payload"]["database"] == manifest.database


def _wait_for_event(api: str, name: str, resource: str, since=None) -> dict:
    """The newest event ``name`` about ``resource`` from the server's event store (written asynchronously);
    ``since`` (a datetime): only one that occurred after it, so an older run's event is not taken for it."""
    import time

    import httpx

    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [resource]}, "order": "DESC"}, "limit": 5}
    if since is not None:
        body["filter"]["occurred"] = {"since": since.isoformat()}
    deadline = time.monotonic() + 30
    while True:
        events = httpx.post(f"{api}/events/filter", json=body, timeout=10).raise_for_status().json()["events"]
        if events or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert events, f"no {name} event for {resource}"
    return events[0]


def test_encrypted_backup_needs_the_identity(prefect_server, varied_db, pg, tmp_path):
    from flows.backup import backup_flow

    identity = x25519.Identity.generate()
    repo = tmp_path / "repo"
    backup_flow(repository=f"file://{repo}", encrypt_to=[str(identity.to_public())])
    storage = LocalStorage(repo)
    (manifest,) = list_backups(storage)
    assert manifest.encrypted and len(manifest.encryption["recipients"]) == 1
    assert storage.get_bytes(manifest.dump.key).startswith(b"age-encryption.org/v1")
    _restore_and_compare(pg, storage, manifest, varied_db, tmp_path, [identity])


def test_all_databases_each_get_a_backup(prefect_server, pg, tmp_path, monkeypatch):
    from flows.backup import backup_flow

    names = [pg.create_database(f"all_{i}_{uuid.uuid4().hex[:6]}").rsplit("/", 1)[1] for i in range(2)]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg.url("postgres"))
    monkeypatch.setenv("CHARHUB_OPS_PARALLEL_DATABASES", "2")
    results = backup_flow(repository=f"file://{tmp_path}/repo", all_databases=True)
    backed_up = {r["database"] for r in results}
    assert set(names) <= backed_up and "postgres" in backed_up
    assert len({r["backup_id"] for r in results}) == len(results)


def test_size_anomaly_is_flagged_in_the_report(prefect_server, pg, database, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.backup import backup_flow

    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", database)
    with pg.connect(database.rsplit("/", 1)[1]) as conn:
        conn.execute("CREATE TABLE t (x text)")
    backup_flow(repository=f"file://{tmp_path}/repo")
    with pg.connect(database.rsplit("/", 1)[1]) as conn:
        conn.execute("INSERT INTO t SELECT md5(g::text) FROM generate_series(1, 20000) g")
    backup_flow(repository=f"file://{tmp_path}/repo")
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["backup-report"])), limit=1,
            sort="CREATED_DESC")
    assert "⚠ backup is" in artifact.data and "above 200%" in artifact.data


def test_failure_notifies_through_the_block_without_secrets(prefect_server, tmp_path, monkeypatch):
    from flows.backup import backup_flow

    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", "postgresql://charhub:hunter2-Secret@127.0.0.1:1/charhub_db")
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRIES", "0")
    from charhub_ops.errors import DatabaseError

    with notification_hook(monkeypatch, "ops-alerts") as bodies:
        with pytest.raises(DatabaseError, match="cannot connect to postgresql://charhub:\\*\\*\\*@127.0.0.1:1/charhub_db"):
            backup_flow(repository=f"file://{tmp_path}/repo")
    assert len(bodies) == 1
    text = json.loads(bodies[0])["text"]
    assert "backup" in text and "failed" in text and "cannot connect" in text
    assert "hunter2" not in text


@pytest.mark.docker
def test_backup_through_docker_exec(prefect_server, pg_container, tmp_path, monkeypatch, pg):
    from flows.backup import backup_flow

    pg_container.psql("CREATE DATABASE charhub_db")
    create_varied_schema_in_container(pg_container)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", "postgresql://postgres@/charhub_db?host=/var/run/postgresql")
    (summary,) = backup_flow(repository=f"file://{tmp_path}/repo", access={"docker_container": pg_container.name})
    storage = LocalStorage(tmp_path / "repo")
    (manifest,) = list_backups(storage)
    assert manifest.dump_method == "docker" and summary["rows"] == 300 + 900 + 300
    dump = fetch_dump(storage, manifest, tmp_path / "dump.pgc")
    target = pg.create_database("from_docker_" + uuid.uuid4().hex[:6])
    pg_restore(pg.bin, target, dump)
    assert {k: v[0] for k, v in table_hashes(target).items()}["public.UsageLog"] == 900


def create_varied_schema_in_container(container) -> None:
    from tests.harness.schema import VARIED_SCHEMA, fill_sql

    container.psql(VARIED_SCHEMA + fill_sql(300), dbname="charhub_db")
