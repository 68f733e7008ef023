"""The command line as operators use it: real processes, exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from psycopg import sql
from typer.testing import CliRunner

from charhub_ops.cli import app
from charhub_ops.storage import S3Storage

EXE = str(Path(sys.executable).with_name("charhub-ops"))


def run_cli(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=full_env, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


ENTRY_POINTS = {"script": [EXE], "python -m": [sys.executable, "-m", "charhub_ops.cli"]}
COMMANDS = {(): ["backup", "backups", "retention", "restore", "verify", "setup", "serve", "status",
                 "capacity", "deploy", "rollback"],
            ("backups",): ["list", "prune"],
            ("retention",): ["plan"],
            ("deploy",): ["pre", "post"]}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_entry_point_lists_every_command(entry):
    """`python -m charhub_ops.cli` once showed only backup/backups: the other commands registered themselves
    on a second copy of the module, imported while the first ran as __main__."""
    for group, names in COMMANDS.items():
        proc = subprocess.run([*ENTRY_POINTS[entry], *group, "--help"], capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "200"}, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "Usage: charhub-ops" in proc.stdout
        listed = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("│ ") and
                  len(line.split()) > 2 and not line.split()[1].startswith("-")}
        assert set(names) <= listed, (group, proc.stdout)


def test_cli_modules_import_alone_without_prefect():
    """One module per command group, each importable first (no import cycle), none pulling in Prefect."""
    for module in ("app", "backup", "repository", "retention", "restore", "ops", "capacity", "deploy"):
        code = f"import sys, charhub_ops.cli.{module}; assert 'prefect' not in sys.modules"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_backup_json_then_list_json(prefect_server, database, tmp_path):
    runner = CliRunner()
    repo = f"file://{tmp_path}/repo"
    result = runner.invoke(app, ["backup", "--database-url", database, "--to", repo, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"backup_id", "database", "key", "size_bytes", "sha256"} <= set(out)
    assert out["key"].startswith(f"file://{tmp_path}/repo/") and len(out["sha256"]) == 64
    listed = json.loads(runner.invoke(app, ["backups", "list", "--from", repo, "--json"]).stdout)
    assert [b["backup_id"] for b in listed] == [out["backup_id"]]
    assert listed[0]["finished_at"].endswith("Z") and listed[0]["size_bytes"] == out["size_bytes"]


def test_list_paginates_past_1000_objects(bucket):
    client = boto3.client("s3")
    for i in range(1001):
        client.put_object(Bucket=bucket, Key=f"p/other/junk-{i:04d}", Body=b"")
    proc = run_cli("backups", "list", "--from", f"s3://{bucket}/p", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == []


@pytest.mark.parametrize(("args", "env", "needles"), [
    (["backup", "--database-url", "mysql://u@h/db"], {}, ["database_url", "mysql"]),
    (["backup", "--database-url", "postgresql://u@h/db", "--to", "ftp://x/y"], {}, ["repository", "ftp"]),
    (["backup"], {"DATABASE_URL": None, "CHARHUB_OPS_DATABASE_URL": None}, ["database_url", "not set"]),
    (["backup", "--database-url", "postgresql://u@h/db", "--encrypt-to", "age1nope"], {}, ["encrypt_to"]),
    (["backup", "--database-url", "postgresql://u@h/db", "--to", "s3://bucket-x/p"],
     {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
      "AWS_CONFIG_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}, ["R2_ACCESS_KEY_ID"]),
    (["backups", "list", "--from", "s3://ab"], {}, ["repository"]),
], ids=["url-scheme", "repo-scheme", "no-url", "bad-recipient", "no-credentials", "bad-bucket"])
def test_bad_input_is_one_clear_error(args, env, needles):
    assert_one_line_error(run_cli(*args, env=env), *needles)


def test_unreachable_database_is_one_clear_error_without_the_password(prefect_server, tmp_path):
    proc = run_cli("backup", "--database-url", "postgresql://charhub:pa55-Secret@127.0.0.1:1/charhub_db",
                   "--to", f"file://{tmp_path}/repo", env={"PREFECT_API_URL": prefect_server})
    assert_one_line_error(proc, "cannot connect", "database_url")
    assert "pa55-Secret" not in proc.stderr + proc.stdout


def test_old_local_pg_dump_suggests_docker_container():
    from charhub_ops.backup.engine import choose_local_pg_dump
    from charhub_ops.errors import ConfigError

    with pytest.raises(ConfigError, match="--docker-container"):
        choose_local_pg_dump(99)
    path, version = choose_local_pg_dump(10)
    assert path.endswith("pg_dump") and "PostgreSQL" in version


def test_killed_mid_upload_leaves_no_backup(prefect_server, pg, database, bucket):
    name = database.rsplit("/", 1)[1]
    with pg.connect(name) as conn:  # ~40 MB of hex that zstd only halves: several 5 MiB parts
        conn.execute("CREATE TABLE blob AS SELECT decode(md5(random()::text) || md5(random()::text), 'hex') b "
                     "FROM generate_series(1, 600000)")
    env = {"PREFECT_API_URL": prefect_server, "CHARHUB_OPS_PART_SIZE_MIB": "5", "CHARHUB_OPS_ZSTD_LEVEL": "9"}
    proc = subprocess.Popen([EXE, "backup", "--database-url", database, "--to", f"s3://{bucket}/db"],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = boto3.client("s3")
    deadline = time.monotonic() + 90
    try:
        while not client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
            assert proc.poll() is None, "backup ended before its upload was seen"
            assert time.monotonic() < deadline, "no multipart upload started"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    storage = S3Storage(bucket, "db")
    assert not any(o.key.endswith("manifest.json") for o in storage.list())
    listed = run_cli("backups", "list", "--from", f"s3://{bucket}/db", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    assert len(list(storage.list_incomplete_uploads())) == 1  # left for prune to abort after 24 h
    # The killed run's slot postgres-<db> stays taken until its lease expires (lock_lease_seconds): drop the
    # database, or a later `backup --all` on this shared cluster waits for that slot (seen: test_backup_flow's
    # all-databases test hung when it ran after this file).
    with pg.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_restore_and_verify_json(prefect_server, pg, database, tmp_path):
    from tests.harness.schema import create_varied_schema

    create_varied_schema(database, rows=30)
    runner = CliRunner()
    repo = f"file://{tmp_path}/repo"
    backup = json.loads(runner.invoke(app, ["backup", "--database-url", database, "--to", repo, "--json"]).stdout)
    target = pg.url("cli_restored_" + backup["backup_id"][-4:])
    result = runner.invoke(app, ["restore", "--from", repo, "--database-url", target, "--json"])
    assert result.exit_code == 0, result.output
    restored = json.loads(result.stdout)
    assert {"backup_id", "database", "tables", "rows"} <= set(restored)
    assert restored["backup_id"] == backup["backup_id"] and restored["rows"] == 30 + 90 + 30
    again = runner.invoke(app, ["restore", "--from", repo, "--database-url", target])
    assert again.exit_code == 1 and "already exists" in again.output
    result = runner.invoke(app, ["verify", "--from", repo, "--database-url", pg.url("postgres"), "--json"])
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["ok"] is True and verdict["mismatches"] == [] and verdict["tables"] == 3
    listed = json.loads(runner.invoke(app, ["backups", "list", "--from", repo, "--json"]).stdout)
    assert listed[0]["verified_ok"] is True and listed[0]["verified_at"].endswith("Z")


@pytest.mark.parametrize(("args", "needles"), [
    (["restore", "--database-url", "postgresql://u@h/db", "--before", "yesterday"], ["--before"]),
    (["restore", "--database-url", "postgresql://u@h/db", "--replace"], ["production", "--yes"]),
], ids=["bad-time", "production-needs-yes"])
def test_restore_bad_input(args, needles):
    assert_one_line_error(run_cli(*args, env={"CHARHUB_OPS_PRODUCTION": "true"}), *needles)


def test_progress_bar_only_on_a_terminal(prefect_server, database, tmp_path):
    name = database.rsplit("/", 1)[1]
    import psycopg

    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT md5(g::text) AS x FROM generate_series(1, 200000) g")
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "COLUMNS": "120"}
    command = f"{EXE} backup --database-url {database} --to file://{tmp_path}/tty"
    on_tty = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, env=env,
                            timeout=120, check=False)
    assert on_tty.returncode == 0, on_tty.stdout
    assert f"{name}" in on_tty.stdout and "B/s" in on_tty.stdout  # the bar's transfer-speed column
    piped = run_cli("backup", "--database-url", database, "--to", f"file://{tmp_path}/pipe",
                    env={"PREFECT_API_URL": prefect_server})
    assert piped.returncode == 0 and "B/s" not in piped.stderr + piped.stdout
