"""`charhub-ops cleanup` end to end: the Prefect flow on the test server, real PostgreSQL, the S3 server."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from charhub_ops.cli import app
from tests.harness.charhub_schema import create_charhub_schema
from tests.test_backup_flow import _wait_for_event
from tests.test_migrate_flow import _latest_artifact

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "cleanup-policy.example.yaml"


@pytest.fixture
def env(database, tmp_path, monkeypatch):
    create_charhub_schema(database)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("""INSERT INTO "UsageLog" (id, "timestamp", processed)
            SELECT 'u' || g, now() - make_interval(days => g), g % 2 = 0 FROM generate_series(1, 200) g""")
        conn.execute("""INSERT INTO "ContentTranslation" (id, status, "updatedAt")
            SELECT 't' || g, (ARRAY['ACTIVE', 'OUTDATED', 'FAILED'])[1 + g % 3]::"TranslationStatus",
                   now() - make_interval(days => 40) FROM generate_series(1, 30) g""")
    monkeypatch.setenv("CHARHUB_OPS_REPOSITORY", f"file://{tmp_path}/repo")
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_PAUSE", "0")
    policy = tmp_path / "policy.yaml"
    shutil.copy(EXAMPLE, policy)
    return database, str(policy)


def cli(*args: str):
    return CliRunner().invoke(app, ["cleanup", *args])


def left(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        return (conn.execute('SELECT count(*) FROM "UsageLog"').fetchone()[0],
                conn.execute('SELECT count(*) FROM "ContentTranslation"').fetchone()[0])


def test_dry_run_then_clean_rows_with_artifacts_and_event(prefect_server, env):
    url, policy = env
    dry = cli("--database-url", url, "--policy", policy, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    summary = json.loads(dry.stdout)
    by_table = {p["table"]: p for p in summary["policies"]}
    assert summary["dry_run"] is True
    # days 90..200, even ones (day 90 is older than the run's cutoff: it was written before the run)
    assert (by_table["UsageLog"]["matched"], by_table["UsageLog"]["deleted"]) == (56, 0)
    assert by_table["ContentTranslation"]["matched"] == 20  # OUTDATED and FAILED, not ACTIVE
    assert left(url) == (200, 30)
    preview = _latest_artifact(prefect_server, "cleanup-preview")
    assert 'CREATE INDEX CONCURRENTLY ON "CorrectionJobLog" ("startedAt")' in preview  # the index warning
    human = cli("--database-url", url, "--policy", policy, "--dry-run")
    assert human.exit_code == 0 and "UsageLog: 56 rows older than 90d — would delete 56" in human.stderr

    started = datetime.now(UTC)
    done = cli("--database-url", url, "--policy", policy, "--json")
    assert done.exit_code == 0, done.output
    result = {p["table"]: p for p in json.loads(done.stdout)["policies"]}
    assert {k: result["UsageLog"][k] for k in ("matched", "deleted", "stopped")} == \
        {"matched": 56, "deleted": 56, "stopped": "done"}
    assert result["UsageLog"]["batches"] >= 1
    assert left(url) == (144, 10)
    report = _latest_artifact(prefect_server, "cleanup-report")
    assert "| UsageLog | 90d |" in report
    event = _wait_for_event(prefect_server, "charhub.cleanup.completed", "charhub.cleanup", since=started)
    assert event["payload"]["rows_deleted"] == 76


@pytest.mark.parametrize(("policy", "needle"), [
    ({"table": "CreditTransaction", "timestamp_column": "timestamp", "older_than": "1y"},
     "policy CreditTransaction: the table is protected"),
    ({"table": "UsageLog", "timestamp_column": "timestamp", "older_than": "90d", "where": {"processed": "1; --"}},
     "policy UsageLog: where.processed: '1; --' looks like SQL"),
])
def test_a_bad_policy_is_one_clear_error(prefect_server, env, tmp_path, policy, needle):
    import yaml

    url, _ = env
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"policies": [policy]}))
    result = cli("--database-url", url, "--policy", str(path))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0]
    assert "Traceback" not in result.output
    assert left(url) == (200, 30)


def test_policy_is_required(env):
    result = cli("--database-url", env[0])
    assert result.exit_code == 1 and "--policy: required" in result.stderr


def test_storage_run_and_docker_dry_run(prefect_server, env, bucket, monkeypatch):
    import boto3

    url, _ = env
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", url)
    monkeypatch.setenv("CHARHUB_OPS_REPOSITORY", f"s3://{bucket}/backups")
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_REPOSITORY", f"s3://{bucket}")
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_REFERENCES", "Character.avatar,CuratedImage.url")
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_GRACE", "1h")
    client = boto3.client("s3")
    client.put_object(Bucket=bucket, Key="prod/just-uploaded.png", Body=b"x")
    client.create_multipart_upload(Bucket=bucket, Key="backups/charhub_db/20260101T000000Z-ab12/dump.pgc.zst")
    storage = cli("storage", "--mode", "quarantine", "--json")  # moto dates uploads in 2010: stale
    assert storage.exit_code == 0, storage.output
    summary = json.loads(storage.stdout)
    media = summary["storage"]["media"]
    assert (media["mode"], media["scanned"], media["young"], media["candidates"]) == ("quarantine", 1, 1, [])
    assert summary["storage_done"]["uploads_aborted"] == 1
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert "aborted 1" in _latest_artifact(prefect_server, "cleanup-report")
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_PREFIXES", "prod/,dev/")  # no database named for dev/
    storage = cli("storage", "--dry-run", "--json")
    assert storage.exit_code == 0, storage.output
    assert json.loads(storage.stdout)["storage"]["media"]["not_scanned"] == ["dev/"]
    assert "dev/: not scanned (no database owns its references" in _latest_artifact(prefect_server, "cleanup-preview")
    docker = cli("docker", "--dry-run", "--json")
    assert docker.exit_code == 0, docker.output
    plan = json.loads(docker.stdout)["docker"]
    assert plan["usage_before"]["images"] >= 0 and "docker_done" not in json.loads(docker.stdout)


def test_the_database_password_shows_nowhere(prefect_server, env, tmp_path):
    """Trust auth ignores the password, so it can be a marker: not in the output, the artifacts or the run's
    parameters, neither on success nor when the database refuses (wrong database name)."""
    import httpx

    url, policy = env
    secret = "pw-MARK-7f3a9c"
    with_password = url.replace("postgres@", f"postgres:{secret}@")
    runs = [cli("--database-url", with_password, "--policy", policy, "--dry-run", "--json"),
            cli("--database-url", with_password.rsplit("/", 1)[0] + "/no_such_db", "--policy", policy)]
    assert runs[0].exit_code == 0 and runs[1].exit_code == 1
    texts = [r.output for r in runs] + [_latest_artifact(prefect_server, "cleanup-preview")]
    flow_runs = httpx.post(f"{prefect_server}/flow_runs/filter", json={"limit": 50}, timeout=10).json()
    texts += [json.dumps(r["parameters"]) + str(r["state"]) for r in flow_runs]
    assert not [t for t in texts if secret in t]
