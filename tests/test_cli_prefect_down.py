"""Fault drill: the Prefect API goes away during a CLI run with a configured server (PREFECT_API_URL).

A real ``prefect server start`` process is killed while ``charhub-ops backup`` streams a dump. The CLI
must say so in one ``error:`` line naming PREFECT_API_URL, exit 1, print no traceback, and leave the
repository with either a complete, restorable backup or none listed (never a manifest without its data).

Prefect's client retries a lost connection 5 times with backoff (2 + 4 + … + 32 s); the runs here allow
one retry (PREFECT_CLIENT_MAX_RETRIES=1) so the drill takes seconds, not a minute.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.prefect_server import kill, start_prefect_server
from tests.harness.services import free_port
from tests.test_cli import EXE, assert_one_line_error, run_cli


@pytest.fixture
def prefect_process(tmp_path) -> Iterator[tuple[subprocess.Popen, str]]:
    home = tmp_path / "prefect-server"
    home.mkdir()
    proc, api = start_prefect_server(home)
    yield proc, api
    kill(proc)


def client_env(api: str, home: Path) -> dict[str, str]:
    return {"PREFECT_API_URL": api, "PREFECT_HOME": str(home), "PREFECT_CLIENT_MAX_RETRIES": "1"}


def assert_complete_or_nothing(repo: str) -> list[dict]:
    """`backups list --json` shows no backup, or complete ones: the dump's bytes match the manifest and
    pg_restore reads its table of contents."""
    listed = run_cli("backups", "list", "--from", repo, "--json")
    assert listed.returncode == 0, listed.stderr
    backups = json.loads(listed.stdout)
    for backup in backups:
        dump = Path(backup["key"].removeprefix("file://"))
        data = dump.read_bytes()
        assert len(data) == backup["size_bytes"] and hashlib.sha256(data).hexdigest() == backup["sha256"]
        toc = subprocess.run(f"zstd -dc {dump} | pg_restore -l", shell=True, capture_output=True, text=True)
        assert toc.returncode == 0 and "TABLE DATA public blob" in toc.stdout, toc.stderr
    return backups


def test_prefect_api_killed_mid_backup(prefect_process, pg, database, tmp_path) -> None:
    server, api = prefect_process
    with pg.connect(database.rsplit("/", 1)[1]) as conn:  # ~30 MB of text: the dump streams for a while
        conn.execute("CREATE TABLE blob AS SELECT md5(g::text) || md5((g * 7)::text) AS x "
                     "FROM generate_series(1, 400000) g")
    repo_dir = tmp_path / "repo"
    proc = subprocess.Popen([EXE, "backup", "--database-url", database, "--to", f"file://{repo_dir}"],
                            env={**os.environ, **client_env(api, tmp_path / "client")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(p.is_file() for p in repo_dir.rglob("*")):  # the dump's first bytes are being written
            assert proc.poll() is None, "backup ended before its dump was seen: " + proc.stderr.read()
            assert time.monotonic() < deadline, "no dump started"
            time.sleep(0.02)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_one_line_error(result, "prefect", "PREFECT_API_URL", api)
    assert_complete_or_nothing(f"file://{repo_dir}")


def test_prefect_api_gone_before_the_run(database, tmp_path) -> None:
    api = f"http://127.0.0.1:{free_port()}/api"  # what a killed server leaves: nothing listening
    repo = f"file://{tmp_path}/repo"
    result = run_cli("backup", "--database-url", database, "--to", repo, env=client_env(api, tmp_path / "client"))
    assert_one_line_error(result, "prefect", "PREFECT_API_URL", api, "ConnectError")
    assert assert_complete_or_nothing(repo) == []
