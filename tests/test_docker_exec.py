"""charhub_ops.docker_exec against a real Docker engine and a real PostgreSQL inside a container."""

from __future__ import annotations

import hashlib
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker
import pytest

from charhub_ops import docker_exec
from charhub_ops.docker_exec import ContainerExec
from charhub_ops.errors import DatabaseError, DockerError
from tests.harness.docker_pg import PG_SOCKET_DIR, PgContainer

pytestmark = pytest.mark.docker
PG = ["-h", PG_SOCKET_DIR, "-U", "postgres"]


@pytest.fixture(scope="module")
def ex(pg_container: PgContainer) -> ContainerExec:
    return ContainerExec(pg_container.name, client=pg_container.client)


@pytest.fixture(scope="module")
def shopdb(pg_container: PgContainer) -> str:
    pg_container.psql("DROP DATABASE IF EXISTS shop")
    pg_container.psql("CREATE DATABASE shop")
    pg_container.psql("CREATE TABLE items (id int PRIMARY KEY, name text, note text); "
                      "INSERT INTO items SELECT g, 'item ' || g, NULL FROM generate_series(1, 100) g", "shop")
    return "shop"


def _processes(ex: ContainerExec) -> str:
    return ex.run(["ps"]).decode()


def test_public_api() -> None:
    assert docker_exec.__all__ == ["ContainerExec", "ContainerPsqlSession", "ExecStream", "docker_errors",
                                   "engine_reason"]


# --- run ---------------------------------------------------------------------------------------------------


def test_run_returns_stdout_only(ex: ContainerExec) -> None:
    assert ex.run(["sh", "-c", "echo out; echo err >&2"]) == b"out\n"


def test_run_passes_env_and_user(ex: ContainerExec) -> None:
    assert ex.run(["sh", "-c", 'echo "$GREETING"'], env={"GREETING": "hello"}) == b"hello\n"
    assert ex.run(["id", "-u"], user="0") == b"0\n"


def test_run_failure_raises_database_error_with_stderr(ex: ContainerExec) -> None:
    with pytest.raises(DatabaseError, match=r"^sh: exit 3: something broke$"):
        ex.run(["sh", "-c", "echo partial; echo something broke >&2; exit 3"], env={"PGPASSWORD": "s3cret"})


def test_failure_message_keeps_only_the_stderr_tail(ex: ContainerExec) -> None:
    with pytest.raises(DatabaseError) as info:
        ex.run(["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x >&2; echo LAST >&2; exit 4"])
    message = str(info.value)
    assert message.startswith("sh: exit 4: ") and message.endswith("xLAST")
    assert len(message) < 600


def test_missing_container_raises_docker_error_naming_it(pg_container: PgContainer) -> None:
    missing = ContainerExec("charhub-ops-no-such-container", client=pg_container.client)
    with pytest.raises(DockerError, match=r"container 'charhub-ops-no-such-container' not found") as info:
        missing.run(["true"], env={"PGPASSWORD": "s3cret"})
    assert "s3cret" not in str(info.value)
    assert isinstance(info.value.__cause__, docker.errors.NotFound) and not info.value.transient


def test_unreachable_engine_raises_docker_error(tmp_path) -> None:
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/no-docker.sock", version="1.41")
    with pytest.raises(DockerError, match=r"^docker: cannot reach the Docker engine: No such file or directory$") \
            as info:
        ContainerExec("postgres", client=client).run(["true"])
    assert info.value.__cause__ is not None and not info.value.transient


def test_unreachable_engine_from_the_environment_is_one_permanent_line(monkeypatch) -> None:
    from charhub_ops.backup.engine import preflight
    from charhub_ops.pgurl import parse_pg_url

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    expected = (r"^docker: cannot reach the Docker engine \(DOCKER_HOST=unix:///nonexistent.sock\): "
                r"No such file or directory$")
    with pytest.raises(DockerError, match=expected) as info:
        preflight(parse_pg_url("postgresql://postgres@/db?host=/var/run/postgresql"), "charhub-postgres-1")
    assert not info.value.transient


EXE = str(Path(sys.executable).with_name("charhub-ops"))


def _cli_backup(container: str, tmp_path, **env: str) -> tuple[int, str]:
    proc = subprocess.run([EXE, "backup", "--database-url", "postgresql://charhub:Kx8vQ71m@/charhub_db",
                           "--to", f"file://{tmp_path}/repo", "--docker-container", container],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert "Traceback" not in proc.stdout + proc.stderr and "Kx8vQ71m" not in proc.stdout + proc.stderr
    return proc.returncode, proc.stderr


def test_cli_with_the_engine_down_prints_one_error_line(prefect_server, tmp_path) -> None:
    code, stderr = _cli_backup("charhub-postgres-1", tmp_path, DOCKER_HOST="unix:///nonexistent.sock",
                               PREFECT_API_URL=prefect_server)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 1 and errors == ["error: docker: cannot reach the Docker engine "
                                    "(DOCKER_HOST=unix:///nonexistent.sock): No such file or directory"]


def test_cli_with_a_missing_container_fails_once_without_retries(prefect_server, pg_container, tmp_path) -> None:
    code, stderr = _cli_backup("charhub-ops-no-such-container", tmp_path, PREFECT_API_URL=prefect_server,
                               CHARHUB_OPS_TASK_RETRIES="3", CHARHUB_OPS_TASK_RETRY_DELAY="0.1")
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 1 and errors == ["error: docker: container 'charhub-ops-no-such-container' not found "
                                    "(setting docker_container)"]
    assert "Retrying" not in stderr and "AwaitingRetry" not in stderr  # permanent: no retry


def test_stopped_container_raises_docker_error(pg_container: PgContainer) -> None:
    client = pg_container.client
    stopped = client.containers.create("charhub-ops-busybox:test", ["true"], name=f"{pg_container.name}-stopped")
    try:
        with pytest.raises(DockerError, match="is not running"):
            ContainerExec(stopped.name, client=client).run(["true"])
    finally:
        stopped.remove(force=True)


# --- stream ------------------------------------------------------------------------------------------------


def test_stream_large_output_in_small_chunks(ex: ContainerExec) -> None:
    size = 128 * 1024 * 1024
    total = 0
    with ex.stream(["head", "-c", str(size), "/dev/zero"]) as out:
        while chunk := out.read(8192):
            assert len(chunk) <= 8192
            total += len(chunk)
    assert total == size


def test_stream_is_byte_exact_with_interleaved_stderr(ex: ContainerExec) -> None:
    ex.run(["sh", "-c", "head -c 20000000 /dev/urandom > /tmp/blob"])
    expected = ex.run(["sha256sum", "/tmp/blob"]).split()[0].decode()
    script = "head -c 7000001 /tmp/blob; echo middle >&2; tail -c +7000002 /tmp/blob; echo end >&2"
    digest = hashlib.sha256()
    with ex.stream(["sh", "-c", script]) as out:
        while chunk := out.read(100_000):
            digest.update(chunk)
        assert out.stderr == b"middle\nend\n"
    assert digest.hexdigest() == expected


def test_stream_keeps_only_the_last_64k_of_stderr(ex: ContainerExec) -> None:
    with ex.stream(["sh", "-c", "head -c 300000 /dev/zero >&2; echo ok"]) as out:
        assert out.read() == b"ok\n"
        assert len(out.stderr) == 64 * 1024


def test_stream_failure_raises_at_eof_after_the_output(ex: ContainerExec) -> None:
    with ex.stream(["sh", "-c", "echo some output; echo pg_dump died >&2; exit 3"]) as out:
        assert out.readable()
        assert out.read(1000) == b"some output\n"
        with pytest.raises(DatabaseError, match=r"^sh: exit 3: pg_dump died$"):
            out.read(1000)
        with pytest.raises(DatabaseError):  # a failed stream stays failed
            out.read(1000)


def test_stream_close_before_eof_does_not_hang_and_terminates(ex: ContainerExec) -> None:
    out = ex.stream(["sh", "-c", "cat /dev/zero | cat"])
    assert out.read(65536)
    started = time.monotonic()
    out.close()
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while "/dev/zero" in _processes(ex) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "/dev/zero" not in _processes(ex)


def test_pg_dump_custom_format_streams_a_valid_dump(ex: ContainerExec, shopdb: str, tmp_path) -> None:
    dump = tmp_path / "shop.dump"
    with ex.stream(["pg_dump", "-Fc", *PG, shopdb]) as out, dump.open("wb") as f:
        shutil.copyfileobj(out, f, 1 << 20)
    assert dump.read_bytes()[:5] == b"PGDMP"
    if shutil.which("pg_restore"):
        listing = subprocess.run(["pg_restore", "-l", str(dump)], check=True, capture_output=True, text=True)
        assert "TABLE DATA public items" in listing.stdout


def test_pg_dump_of_missing_database_raises(ex: ContainerExec) -> None:
    expected = r'^pg_dump: exit 1: .*database "no_such_db" does not exist'
    with ex.stream(["pg_dump", "-Fc", *PG, "no_such_db"]) as out, pytest.raises(DatabaseError, match=expected):
        out.read()


# --- psql session ------------------------------------------------------------------------------------------


def test_psql_session_rows_nulls_and_commands(ex: ContainerExec, shopdb: str) -> None:
    with ex.psql_session(shopdb, user="postgres") as session:
        assert session.query("SELECT 1, NULL, '', 'two words', E'multi\\nline'") == [
            ("1", None, "", "two words", "multi\nline")]
        assert session.query("SELECT id, note FROM items WHERE id <= 2 ORDER BY id") == [("1", None), ("2", None)]
        assert session.query("SELECT 1 WHERE false") == []
        assert session.query("BEGIN") == []
        assert session.query("CREATE TEMP TABLE t (x int)") == []
        assert session.query("COMMIT;") == []


def test_psql_session_sql_error_then_still_usable(ex: ContainerExec, shopdb: str) -> None:
    with ex.psql_session(shopdb, user="postgres") as session:
        with pytest.raises(DatabaseError, match=r'^psql: ERROR:  column "nope" does not exist'):
            session.query("SELECT nope FROM items")
        assert session.query("SELECT count(*) FROM items") == [("100",)]
        session.query("BEGIN")
        with pytest.raises(DatabaseError, match="division by zero"):
            session.query("SELECT 1/0")
        with pytest.raises(DatabaseError, match="current transaction is aborted"):
            session.query("SELECT 1")
        assert session.query("ROLLBACK") == []
        assert session.query("SELECT 'ok'") == [("ok",)]


def test_psql_session_exported_snapshot_is_held_for_pg_dump(
    ex: ContainerExec, pg_container: PgContainer, shopdb: str
) -> None:
    pg_container.psql("CREATE TABLE IF NOT EXISTS snap (id int); TRUNCATE snap; "
                      "INSERT INTO snap SELECT generate_series(1, 10)", shopdb)
    with ex.psql_session(shopdb, user="postgres") as session:
        session.query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        [(snapshot,)] = session.query("SELECT pg_export_snapshot()")
        assert re.fullmatch(r"[0-9A-F]+-[0-9A-F]+-[0-9]+", snapshot)
        pg_container.psql("INSERT INTO snap SELECT generate_series(11, 15)", shopdb)  # after the snapshot
        dump = ex.run(["pg_dump", *PG, f"--snapshot={snapshot}", "--data-only", "-t", "snap", shopdb])
        copied = dump.decode().split("FROM stdin;\n", 1)[1].split("\\.\n", 1)[0].splitlines()
        assert len(copied) == 10
        assert session.query("SELECT count(*) FROM snap") == [("10",)]
        session.query("COMMIT")
        assert session.query("SELECT count(*) FROM snap") == [("15",)]


def test_psql_session_on_missing_database_raises(ex: ContainerExec) -> None:
    expected = r'^psql: exit 2: .*database "no_such_db" does not exist'
    with ex.psql_session("no_such_db", user="postgres") as session, pytest.raises(DatabaseError, match=expected):
        session.query("SELECT 1")


def test_psql_session_close_ends_psql(ex: ContainerExec, shopdb: str) -> None:
    session = ex.psql_session(shopdb, user="postgres", env={"PGAPPNAME": "charhub-ops-close-test"})
    assert session.query("SELECT current_setting('application_name')") == [("charhub-ops-close-test",)]
    session.close()
    session.close()  # idempotent
    with pytest.raises(DatabaseError, match="closed"):
        session.query("SELECT 1")
    deadline = time.monotonic() + 5
    while "psql" in _processes(ex) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "psql" not in _processes(ex)


def test_psql_session_errors_are_classified_by_sqlstate(ex: ContainerExec, pg_container: PgContainer,
                                                        shopdb: str) -> None:
    with ex.psql_session(shopdb, user="postgres") as holder, ex.psql_session(shopdb, user="postgres") as session:
        holder.query("BEGIN")
        holder.query("LOCK TABLE items")
        session.query("SET lock_timeout = '50ms'")
        with pytest.raises(DatabaseError, match="lock timeout") as lock:
            session.query("SELECT count(*) FROM items")
        assert lock.value.transient  # 55P03
        holder.query("ROLLBACK")
        with pytest.raises(DatabaseError, match="does not exist") as missing:
            session.query("SELECT nope FROM items")
        assert not missing.value.transient  # 42703
        assert session.query("SELECT count(*) FROM items") == [("100",)]
        with pytest.raises(DatabaseError, match="terminating connection") as terminated:
            session.query("SELECT pg_terminate_backend(pg_backend_pid())")
        assert terminated.value.transient  # psql lost its server: exit 2, stderr says why


# --- the engine's connection dropped mid-stream -----------------------------------------------------------------


class CuttableProxy:
    """TCP in front of the engine's Unix socket; ``cut()`` resets every open connection (RST), as a
    restarted engine or a broken network would."""

    def __init__(self, target: str = "/var/run/docker.sock") -> None:
        self.target, self.pairs, self.threads = target, [], []
        self.cutting = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"tcp://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.cutting.is_set():  # accepted while cutting: reset it too
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            self.pairs.append((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                self.threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while not self.cutting.is_set():
            if select.select([src], [], [], 0.05)[0]:
                try:
                    data = src.recv(1 << 16)
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(data)
                except OSError:
                    return

    def cut(self) -> None:
        self.cutting.set()
        self.server.close()  # from now on the engine is unreachable: new connections are refused, never hang
        for thread in self.threads:
            thread.join(5)
        for client, upstream in self.pairs:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            client.close()
            upstream.close()
        self.pairs, self.threads = [], []
        self.cutting.clear()

    def close(self) -> None:
        self.cut()
        self.server.close()


def test_dropped_exec_stream_is_transient_and_the_command_is_terminated(ex: ContainerExec,
                                                                         pg_container: PgContainer) -> None:
    proxy = CuttableProxy()
    client = docker.DockerClient(base_url=proxy.url)
    try:
        # the 0.3 s: output written in the first instant after the exec starts was lost through this TCP proxy in
        # 2 of 6 runs (never through the Unix socket): the drill is about the cut, not about that (see the notes)
        command = ["sh", "-c", "sleep 0.3; echo started; sleep 600"]
        out = ContainerExec(pg_container.name, client=client).stream(command)
        assert out.read(100) == b"started\n"
        proxy.cut()
        with pytest.raises(DockerError, match="reading the output of sh") as info:
            out.read(100)
        assert info.value.transient and isinstance(info.value.__cause__, OSError)
        out.close()
        deadline = time.monotonic() + 5
        while "sleep 600" in _processes(ex) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "sleep 600" not in _processes(ex)
    finally:
        client.close()
        proxy.close()
