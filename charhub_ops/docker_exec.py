"""Run commands inside a container through the Docker API: to completion, streamed, or as a psql session.

Production dumps run *inside* CharHub's ``postgres`` container (its pg_dump matches the server's major
version) and are streamed out over the engine's socket, never buffered whole.

Contracts (every docker / requests / socket error is translated here and re-raised ``from exc``):

``ContainerExec(container, client=None)``
    Lazily builds ``docker.from_env()``. Every method raises ``DockerError`` when the engine is unreachable
    (``docker: cannot reach the Docker engine (DOCKER_HOST=...): <reason>``), when the container does not
    exist (``docker: container 'NAME' not found (setting docker_container)``) or is not running: all
    permanent. A connection to the engine that breaks while a command runs (a read fails, or the output
    ends while the command still runs) raises a transient ``DockerError``; an engine that does not answer
    in time too.
``ContainerExec.run(cmd, env=None, user=None) -> bytes``
    Runs ``cmd`` to completion and returns its stdout. Exit code != 0 raises
    ``DatabaseError("<program>: exit <code>: <last ~500 chars of stderr>")``, transient when stderr shows
    a lost or refused database connection (``charhub_ops.pgerrors``).
``ContainerExec.stream(cmd, env=None, user=None) -> ExecStream``
    Starts ``cmd`` and returns a binary, read-only raw stream of its stdout (bounded memory; stderr keeps
    its last 64 KiB). At EOF the exit code is checked: ``read`` raises ``DatabaseError`` as above, so a
    failed pg_dump never looks like a short successful dump. ``close()`` before EOF shuts the socket down
    and SIGTERMs the command's processes (the engine would otherwise leave them blocked on a full pipe
    forever, e.g. a pg_dump holding its locks): every exec carries a ``CHARHUB_OPS_EXEC`` token in its
    environment and a best-effort ``sh``/``grep``/``kill`` exec finds them by it. Never raises, never hangs.
``ContainerExec.run_with_input(cmd, source, env=None, user=None) -> bytes``
    Like ``run``, with ``source`` (a binary file) streamed to the command's stdin (``pg_restore`` of a local dump).
``ContainerExec.psql_session(dbname, user=None, env=None) -> ContainerPsqlSession``
    Starts ``psql`` with stdin attached (``user`` is the PostgreSQL role, ``-U``), so one transaction can
    span several queries (``pg_export_snapshot()`` held while pg_dump runs in another exec).
``ContainerPsqlSession.query(sql) -> list[tuple[str | None, ...]]``
    Sends one statement; returns its rows as text (NULL -> None; [] for BEGIN, COMMIT, DDL...). An SQL error
    raises ``DatabaseError("psql: ERROR: ...")`` (transient by its SQLSTATE) and the session stays usable;
    psql dying raises ``DatabaseError`` with its exit code. ``close()`` (or leaving the ``with`` block) ends psql.

Messages never contain environment values (PGPASSWORD...): they name the program, the exit code and stderr.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, Self

import docker
import requests

from charhub_ops.docker_demux import CHUNK as _CHUNK
from charhub_ops.docker_demux import Demux
from charhub_ops.errors import DatabaseError, DockerError
from charhub_ops.pgerrors import sqlstate_is_transient, tool_failure

__all__ = ["ContainerExec", "ContainerPsqlSession", "ExecStream"]

_STDERR_KEEP = 64 * 1024
_MESSAGE_TAIL = 500
_FIELD_SEP, _RECORD_SEP, _NULL = "\x1f", "\x1e", "\x1d"
_TOKEN_VAR = "CHARHUB_OPS_EXEC"  # marks an exec's processes so that an early close can terminate them


class _Exec:
    """One started exec: its id, connection and the bits needed to report its failure."""

    def __init__(self, api, exec_id: str, raw_socket, program: str, container: str, token: str, user: str | None):
        self.api, self.exec_id, self.program, self.container = api, exec_id, program, container
        self.token, self.user = token, user
        self.demux = Demux(raw_socket)
        self.demux.sock.settimeout(None)  # pg_dump may wait on locks for minutes without output
        self.stderr = bytearray()

    def keep_stderr(self, data: memoryview) -> None:
        self.stderr += data
        if len(self.stderr) > _STDERR_KEEP:
            del self.stderr[: len(self.stderr) - _STDERR_KEEP]

    def exit_code(self, timeout: float = 10.0) -> int:
        """The exit code, polling ``exec_inspect`` until the process is no longer running."""
        deadline, delay = time.monotonic() + timeout, 0.002
        with _translate(self.container, f"inspect exec of {self.program}"):
            while True:
                info = self.api.exec_inspect(self.exec_id)
                if not info.get("Running") and info.get("ExitCode") is not None:
                    return int(info["ExitCode"])
                if time.monotonic() > deadline:
                    self.terminate()
                    raise DockerError(f"docker: {self.program} in '{self.container}': the connection to it "
                                      f"ended while it still ran", transient=True)
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def terminate(self) -> None:
        """Best effort, never raises: SIGTERM every process whose environment carries this exec's token."""
        script = ('for d in /proc/[0-9]*; do tr "\\0" "\\n" < "$d/environ" 2>/dev/null | grep -qxF "$1" '
                  '&& kill "${d#/proc/}" 2>/dev/null; done; true')
        try:
            created = self.api.exec_create(self.container, ["sh", "-c", script, "sh", self.token],
                                           user=self.user or "")
            self.api.exec_start(created["Id"], detach=True)  # reading its (empty) output could block forever
        except (docker.errors.DockerException, requests.RequestException, OSError):
            pass

    def failure(self, code: int) -> DatabaseError:
        return tool_failure(self.program, code, bytes(self.stderr))

    def dropped(self, exc: OSError) -> DockerError:
        """The connection to the engine broke mid-read: transient (the command is terminated)."""
        self.terminate()
        return DockerError(f"docker: reading the output of {self.program} in '{self.container}': "
                           f"{exc.strerror or exc}", transient=True)


class ExecStream(io.RawIOBase):
    """The stdout of a command running in a container, as a readable binary raw stream."""

    def __init__(self, started: _Exec):
        super().__init__()
        self._exec = started
        self._eof = False
        self._error: DatabaseError | None = None

    @property
    def stderr(self) -> bytes:
        """The last 64 KiB of the command's stderr read so far."""
        return bytes(self._exec.stderr)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed ExecStream")
        if self._eof:
            return self._finish()
        out = memoryview(b).cast("B")
        total = 0
        while total < len(out) and (total == 0 or self._exec.demux.buffered()):
            try:
                chunk = self._exec.demux.next_chunk(len(out) - total)
            except OSError as exc:
                raise self._exec.dropped(exc) from exc
            if chunk is None:
                self._eof = True
                return total if total else self._finish()
            stream, data = chunk
            if stream == 2:
                self._exec.keep_stderr(data)
            else:
                out[total : total + len(data)] = data
                total += len(data)
        return total

    def readall(self) -> bytes:
        parts = []
        while data := self.read(_CHUNK):
            parts.append(data)
        return b"".join(parts)

    def _finish(self) -> int:
        if self._error is None:
            code = self._exec.exit_code()
            if code == 0:
                return 0
            self._error = self._exec.failure(code)
        raise self._error

    def close(self) -> None:
        """Close the connection; before EOF, also terminate the command (best effort, never hangs)."""
        if not self.closed:
            self._exec.demux.close()
            if not self._eof:
                self._exec.terminate()
        super().close()


class ContainerPsqlSession:
    """An interactive psql inside the container; one statement at a time, transactions may stay open."""

    def __init__(self, started: _Exec):
        self._exec = started
        self._marker = f"__charhub_ops_{uuid.uuid4().hex}__"
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def query(self, sql: str) -> list[tuple[str | None, ...]]:
        """Run one statement and return its rows; an SQL error raises DatabaseError, the session survives."""
        if self._closed:
            raise DatabaseError("psql: session is closed")
        text = sql.strip()
        if not text.endswith(";"):
            text += ";"  # a backslash command would otherwise run before the unterminated statement
        script = f"\\set ERROR false\n{text}\n\\echo {self._marker} :ERROR :SQLSTATE\n\\warn {self._marker}\n"
        try:
            self._exec.demux.sock.sendall(script.encode())
        except OSError:
            pass  # psql is gone: reading reports its exit code and stderr
        out, err = self._read_until_markers()
        rows, status = out.rsplit(f"{self._marker} ", 1)
        failed, _, sqlstate = status.strip().partition(" ")
        if failed == "true":
            raise DatabaseError(f"psql: {_error_text(err)}", transient=sqlstate_is_transient(sqlstate))
        return _parse_rows(rows)

    def _read_until_markers(self) -> tuple[str, str]:
        out, err = bytearray(), bytearray()
        stdout_done = stderr_done = False
        marker = self._marker.encode()
        while not (stdout_done and stderr_done):
            try:
                chunk = self._exec.demux.next_chunk(_CHUNK)
            except OSError as exc:
                self._closed = True
                raise self._exec.dropped(exc) from exc
            if chunk is None:
                self._exec.keep_stderr(memoryview(err))
                self._closed = True
                code = self._exec.exit_code()
                raise self._exec.failure(code) if code else DatabaseError("psql: session ended unexpectedly")
            stream, data = chunk
            if stream == 2:
                err += data
                stderr_done = err.endswith(marker + b"\n")
            else:
                out += data
                stdout_done = out.endswith(b"\n") and marker + b" " in out[-(len(marker) + 24) :]
        return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def close(self) -> None:
        """End psql (an open transaction is rolled back); never hangs."""
        if self._closed:
            return
        self._closed = True
        sock = self._exec.demux.sock
        try:
            sock.sendall(b"\\q\n")
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            while self._exec.demux.next_chunk(_CHUNK) is not None:
                pass
        except OSError:  # psql still busy after 5 s (a long query): terminate it
            self._exec.demux.close()
            self._exec.terminate()
        finally:
            self._exec.demux.close()


class ContainerExec:
    """Executes commands in one container of the Docker engine."""

    def __init__(self, container: str, client: docker.DockerClient | None = None):
        self.container = container
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with _translate(self.container, "connect"):
                self._client = docker.from_env()
        return self._client

    def run(self, cmd: list[str], env: dict[str, str] | None = None, user: str | None = None) -> bytes:
        """Run ``cmd`` to completion and return its stdout; exit != 0 raises DatabaseError."""
        with self.stream(cmd, env=env, user=user) as out:
            return out.readall()

    def stream(self, cmd: list[str], env: dict[str, str] | None = None, user: str | None = None) -> ExecStream:
        """Start ``cmd``; return its stdout as a stream whose ``read`` raises DatabaseError at EOF on failure."""
        return ExecStream(self._start(cmd, env, user, stdin=False))

    def run_with_input(self, cmd: list[str], source: BinaryIO, env: dict[str, str] | None = None,
                       user: str | None = None) -> bytes:
        """Run ``cmd`` with ``source`` streamed to its stdin (e.g. ``pg_restore`` of a local file);
        return its stdout. Exit != 0 raises DatabaseError; a command that stops reading early ends the copy."""
        started = self._start(cmd, env, user, stdin=True)
        sock = started.demux.sock

        def feed() -> None:
            try:
                while chunk := source.read(_CHUNK):
                    sock.sendall(chunk)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the command exited early: its exit code tells why

        writer = threading.Thread(target=feed, name=f"stdin-{started.program}", daemon=True)
        writer.start()
        with ExecStream(started) as out:
            data = out.readall()
        writer.join()
        return data

    def psql_session(self, dbname: str, user: str | None = None, env: dict | None = None) -> ContainerPsqlSession:
        """Start an interactive psql on ``dbname`` (a name or a conninfo) as role ``user`` (default: the
        container's default)."""
        cmd = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=0", "-F", _FIELD_SEP, "-R", _RECORD_SEP,
               "-P", f"null={_NULL}", "-d", dbname]
        if user:
            cmd += ["-U", user]
        return ContainerPsqlSession(self._start(cmd, {"PGCLIENTENCODING": "UTF8", **(env or {})}, None, stdin=True))

    def _start(self, cmd: list[str], env: dict | None, user: str | None, stdin: bool) -> _Exec:
        if not cmd:
            raise ValueError("cmd must not be empty")
        program = os.path.basename(cmd[0])
        token = uuid.uuid4().hex
        api = self.client.api
        with _translate(self.container, f"start {program}"):
            created = api.exec_create(self.container, cmd, stdout=True, stderr=True, stdin=stdin,
                                      environment={**(env or {}), _TOKEN_VAR: token}, user=user or "")
            raw_socket = api.exec_start(created["Id"], socket=True)
            return _Exec(api, created["Id"], raw_socket, program, self.container, f"{_TOKEN_VAR}={token}", user)


def _parse_rows(text: str) -> list[tuple[str | None, ...]]:
    text = text.removesuffix("\n")
    if not text:
        return []
    return [tuple(None if v == _NULL else v for v in rec.split(_FIELD_SEP)) for rec in text.split(_RECORD_SEP)]


def _error_text(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("__charhub_ops_")]
    for i, line in enumerate(lines):
        if "ERROR:" in line or "FATAL:" in line:
            lines = lines[i:]
            break
    text = "\n".join(line.split(": ", 1)[1] if line.startswith("psql:") else line for line in lines).strip()
    return text[:_MESSAGE_TAIL] or "the statement failed (no message)"


@contextmanager
def _translate(container: str, action: str) -> Iterator[None]:
    """Turn docker SDK / requests / socket errors into one-line DockerErrors, raised ``from`` the original."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise DockerError(f"docker: container '{container}' not found (setting docker_container)") from exc
    except docker.errors.APIError as exc:
        raise DockerError(f"docker: {action} in container '{container}': {exc.explanation or exc}") from exc
    except requests.Timeout as exc:
        raise DockerError(f"docker: {action} in container '{container}': the Docker engine did not answer "
                          f"in time", transient=True) from exc
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        where = f" (DOCKER_HOST={os.environ['DOCKER_HOST']})" if os.environ.get("DOCKER_HOST") else ""
        raise DockerError(f"docker: cannot reach the Docker engine{where}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    """The innermost OS-level reason (``No such file or directory``, ``Connection refused``) if there is one."""
    seen, todo = set(), [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        todo += [e for e in (current.__cause__, current.__context__, *current.args) if isinstance(e, BaseException)]
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
