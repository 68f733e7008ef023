"""`charhub-ops pitr restore | verify | recover-table` end to end (the CLI process, a real cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.pitr_restore_support import archive_now, backup, cluster_env, new_cluster


@pytest.fixture(scope="module")
def cluster():
    c = new_cluster("cli")
    with c.connect() as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 20) g")
    backup(c, "full")
    yield c
    c.remove()


def cli(cluster, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **cluster_env(cluster), "CHARHUB_OPS_RUNS_WORK_DIR": str(cluster.base),
           "CHARHUB_OPS_WORK_DIR": str(cluster.base), "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "charhub_ops.cli", "pitr", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_restore_refuses_the_live_directory_and_bad_targets(cluster):
    assert "live data directory" in _one_error_line(cli(cluster, "restore", "--latest", "--into", str(cluster.datadir)))
    (cluster.base / "full").mkdir()
    (cluster.base / "full" / "f").write_text("x")
    assert "not empty" in _one_error_line(cli(cluster, "restore", "--latest", "--into", str(cluster.base / "full")))
    assert "exactly one" in _one_error_line(cli(cluster, "restore", "--into", str(cluster.base / "n")))
    assert "--target-time" in _one_error_line(cli(cluster, "restore", "--target-time", "yesterday",
                                                  "--into", str(cluster.base / "n")))
    assert not (cluster.base / "n").exists()


def test_restore_latest_into_a_new_directory(cluster):
    archive_now(cluster)
    proc = cli(cluster, "restore", "--latest", "--into", str(cluster.base / "copy"), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["target"] == "latest" and result["into"] == str(cluster.base / "copy")
    assert (cluster.base / "copy" / "PG_VERSION").exists()


def test_verify_and_recover_table(cluster):
    proc = cli(cluster, "verify", "--json")
    assert proc.returncode == 0, proc.stderr
    verdict = json.loads(proc.stdout)
    assert verdict["ok"] and verdict["tables"] == 1 and verdict["rows"] == 20
    with cluster.connect() as conn:
        at = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(1.1)
        conn.execute("DELETE FROM notes WHERE id > 5")
    archive_now(cluster)
    dry = cli(cluster, "recover-table", "--table", "notes", "--at", at.isoformat(), "--dry-run")
    assert dry.returncode == 0 and dry.stderr.startswith("would restore"), dry.stderr
    with cluster.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'notes_recovered_%'").fetchone()[0] == 0
    proc = cli(cluster, "recover-table", "--table", "notes", "--at", at.isoformat(), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    with cluster.connect() as conn:
        assert conn.execute(f'SELECT count(*) FROM "{result["plan"]["new_name"]}"').fetchone()[0] == 20
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 5
    again = cli(cluster, "recover-table", "--table", "notes", "--at", at.isoformat())
    assert "already exists" in _one_error_line(again)


def test_missing_stanza_is_one_line(cluster):
    env_stanza = {**cluster_env(cluster), "CHARHUB_OPS_PITR_STANZA": "nosuchstanza"}
    proc = subprocess.run([sys.executable, "-m", "charhub_ops.cli", "pitr", "restore", "--latest", "--into",
                           str(cluster.base / "never")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env_stanza, "COLUMNS": "200"})
    assert "stanza" in _one_error_line(proc)
    assert not (cluster.base / "never").exists()
