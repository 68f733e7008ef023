"""PostgreSQL access for the pipelines: a small SQL-session protocol with two implementations
(psycopg on the host, psql inside a container), catalogue queries, and client-tool runners
(local binaries or ``docker exec``) that stream their output.

Client tools get every connection parameter as ``--dbname=<conninfo without the password>`` and the
password in ``PGPASSWORD``: the same parameters psycopg uses, and no password on a command line.
Failures are classified (charhub_ops.pgerrors): a terminated or refused connection is transient.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import psycopg
from psycopg import sql

from charhub_ops.errors import ConfigError, DatabaseError
from charhub_ops.pgerrors import psycopg_is_transient, tool_failure
from charhub_ops.pgurl import PgUrl

__all__ = [
    "SqlSession", "PsycopgSession", "TableInfo", "ServerInfo", "ToolRunner", "LocalTools", "DockerTools",
    "server_info", "list_tables", "list_databases",
    "make_tools", "open_session", "admin_session", "table_checks", "find_local_tool", "tool_major",
    "HASH_FORMAT", "HASH_SETTINGS", "pin_text_output", "tool_command", "OURS", "our_application_name",
]

# Every session charhub-ops opens carries this application_name prefix (``charhub-ops``, ``charhub-ops:pg_dump``,
# ``charhub-ops:<the URL's own application_name>``): the monitor shows such sessions as ours and never fails a
# check on them nor terminates them (charhub_ops.monitoring.pgfacts).
OURS = "charhub-ops"


def our_application_name(url: PgUrl, role: str | None = None) -> str:
    """``application_name`` for a session of ours on ``url``: the URL's own name behind the ``charhub-ops:``
    prefix (kept as is when it already has it), else ``charhub-ops:<role>`` (``charhub-ops`` without a role)."""
    given = url.params.get("application_name", "")
    if given == OURS or given.startswith(OURS + ":"):
        return given
    name = given or role
    return f"{OURS}:{name}" if name else OURS

TABLES_SQL = """
SELECT n.nspname, c.relname, pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2"""


class SqlSession(Protocol):
    """One database session; ``query`` returns rows (values may be text), raises DatabaseError."""

    def query(self, statement: str) -> list[tuple]: ...

    def close(self) -> None: ...


class PsycopgSession:
    """A psycopg connection in autocommit mode (explicit BEGIN/COMMIT keep a snapshot open)."""

    def __init__(self, url: PgUrl, connect_timeout: int = 10) -> None:
        self.url = url
        # the URL's own connect_timeout wins over this default; application_name always marks the session ours
        # client_encoding: on a SQL_ASCII database psycopg would otherwise return bytes, not str
        defaults = {"connect_timeout": connect_timeout, "client_encoding": "UTF8"}
        try:
            self.conn = psycopg.connect(url.conninfo, autocommit=True, application_name=our_application_name(url),
                                        **{k: v for k, v in defaults.items() if k not in url.params})
        except psycopg.Error as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            reason = lines[0].removeprefix("connection failed: ")
            raise DatabaseError(f"postgres: cannot connect to {url.redacted()} (setting {url.setting}): "
                                f"{reason}", transient=psycopg_is_transient(exc)) from exc

    def query(self, statement: str) -> list[tuple]:
        try:
            cur = self.conn.execute(statement)
            return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise DatabaseError(f"postgres: {lines[0]}", transient=psycopg_is_transient(exc)) from exc

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> PsycopgSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    size_bytes: int


@dataclass(frozen=True)
class ServerInfo:
    version: str
    version_num: int
    database: str
    size_bytes: int

    @property
    def major(self) -> int:
        return self.version_num // 10000


def server_info(session: SqlSession) -> ServerInfo:
    (row,) = session.query("SELECT current_setting('server_version'), current_setting('server_version_num'),"
                           " current_database(), pg_database_size(current_database())")
    return ServerInfo(version=str(row[0]).split()[0], version_num=int(row[1]), database=str(row[2]),
                      size_bytes=int(row[3]))


def list_tables(session: SqlSession) -> list[TableInfo]:
    return [TableInfo(str(s), str(n), int(z)) for s, n, z in session.query(TABLES_SQL)]


def list_databases(session: SqlSession) -> list[str]:
    rows = session.query("SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY 1")
    return [str(r[0]) for r in rows]


# Settings that change how values print as text (``x::text``), pinned so that a content hash computed on
# one server matches the same rows on another. extra_float_digits=3 is what pg_dump uses: any value > 0
# gives the shortest exact float output on PostgreSQL ≥ 12 (3 is also exact on older servers).
# lc_monetary changes money's output; search_path how reg* types (regclass...) qualify names.
# Not a setting but as decisive: the sort order of the rows (``COLLATE "C"``, below) and the database
# encoding (md5 hashes the bytes: a restore creates its database with the backup's encoding).
HASH_FORMAT = 2  # manifests record it: 1 = before these settings were pinned
HASH_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "search_path": "pg_catalog",
}


def pin_text_output(session: SqlSession) -> None:
    """Pin HASH_SETTINGS for the current transaction only (``set_config(..., true)``)."""
    calls = [sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v))
             for k, v in HASH_SETTINGS.items()]
    session.query(sql.SQL("SELECT {}").format(sql.SQL(", ").join(calls)).as_string(None))


def table_checks(session: SqlSession, tables: list[TableInfo], hash_limit_bytes: int = 0,
                 hash_format: int = HASH_FORMAT) -> dict[tuple[str, str], tuple[int, str | None]]:
    """Exact row count and, for tables up to ``hash_limit_bytes``, an md5 of all rows in a stable
    order, in one round trip. Run INSIDE a transaction (the dump's snapshot at backup time, a read-only
    one on a restored copy): the text output settings are pinned for that transaction and rows are sorted
    byte-wise, so the hash does not depend on the server's time zone, date style or collation.
    ``hash_format=1``: the hashes of old manifests (the session's own settings and collation)."""
    if not tables:
        return {}
    order = sql.SQL("")
    if hash_format >= 2:
        pin_text_output(session)
        order = sql.SQL(' COLLATE "C"')
    parts = []
    for t in tables:
        digest = (sql.SQL("md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text{}), ''))").format(order)
                  if t.size_bytes <= hash_limit_bytes else sql.SQL("NULL::text"))
        parts.append(sql.SQL("(SELECT {}::text, {}::text, count(*), {} FROM {}.{} x)").format(
            sql.Literal(t.schema), sql.Literal(t.name), digest, sql.Identifier(t.schema), sql.Identifier(t.name)))
    statement = sql.SQL(" UNION ALL ").join(parts).as_string(None)
    return {(str(s), str(n)): (int(c), None if h is None else str(h)) for s, n, c, h in session.query(statement)}


# --- client tools (pg_dump, pg_dumpall, pg_restore, psql) -------------------------------------------

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def tool_major(version_text: str) -> int:
    match = _VERSION.search(version_text)
    if not match:
        raise DatabaseError(f"cannot read the version from {version_text.strip()[:80]!r}")
    return int(match.group(1))


def find_local_tool(name: str, min_major: int) -> tuple[str, str] | None:
    """The newest local ``name`` binary whose major version ≥ ``min_major``: (path, version text)."""
    candidates = [p for p in [shutil.which(name)] if p]
    candidates += sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    best: tuple[int, str, str] | None = None
    for path in dict.fromkeys(candidates):
        try:
            text = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
            major = tool_major(text)
        except (OSError, subprocess.SubprocessError, DatabaseError):
            continue
        if major >= min_major and (best is None or major > best[0]):
            best = (major, path, text.strip())
    return (best[1], best[2]) if best else None


_CONNECTING = frozenset({"pg_dump", "pg_dumpall", "pg_restore", "psql"})


def tool_command(url: PgUrl, cmd: list[str]) -> list[str]:
    """``cmd`` connected through ``url``: ``--dbname=<every parameter but the password>`` right after the
    program (pg_dump, pg_dumpall, pg_restore, psql). A ``-d``/``--dbname`` naming the URL's own database
    is dropped (the conninfo carries it); naming another raises ValueError: use ``url.with_dbname``.
    The conninfo marks the session ours: ``application_name=charhub-ops:<program>`` (see OURS)."""
    if os.path.basename(cmd[0]) not in _CONNECTING or "--version" in cmd[1:]:
        return cmd
    rest, args = [], iter(cmd[1:])
    for arg in args:
        if arg in ("-d", "--dbname") or arg.startswith("--dbname="):
            name = arg.partition("=")[2] if "=" in arg else next(args, "")
            if name != url.dbname:
                raise ValueError(f"{cmd[0]}: connect to another database with PgUrl.with_dbname, not -d")
            continue
        rest.append(arg)
    ours = url.with_params(application_name=our_application_name(url, os.path.basename(cmd[0])))
    return [cmd[0], f"--dbname={ours.tool_conninfo()}", *rest]


class ToolRunner(Protocol):
    """Runs PostgreSQL client tools somewhere (host or container) with libpq env."""

    method: str

    def run(self, cmd: list[str]) -> bytes: ...

    def stream(self, cmd: list[str]) -> BinaryIO: ...

    def run_with_input(self, cmd: list[str], path: str) -> bytes: ...

    def version(self, tool: str) -> str: ...


class _ProcessStream(BinaryIO):
    """stdout of a local process; at EOF the exit status is checked (a failed pg_dump raises)."""

    def __init__(self, proc: subprocess.Popen, program: str) -> None:
        self.proc, self.program = proc, program
        self.stderr: deque[bytes] = deque(maxlen=64)
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)

    def read(self, n: int = -1) -> bytes:
        data = self.proc.stdout.read(n)
        if not data or n < 0:
            self._check()
        return data

    def readable(self) -> bool:
        return True

    def _check(self) -> None:
        code = self.proc.wait()
        self._drain.join(5)
        if code != 0:
            raise tool_failure(self.program, code, b"".join(self.stderr))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalTools:
    """Client tools on this host (``pg_dump`` must be ≥ the server's major version)."""

    method = "local"

    def __init__(self, url: PgUrl, bindir: str | None = None) -> None:
        self.url = url
        self.bindir = bindir

    def _cmd(self, cmd: list[str]) -> list[str]:
        cmd = tool_command(self.url, cmd)
        return [f"{self.bindir}/{cmd[0]}" if self.bindir else cmd[0], *cmd[1:]]

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.url.tool_env()}

    def run(self, cmd: list[str], stdin_path: str | None = None) -> bytes:
        try:
            with open(stdin_path or os.devnull, "rb") as stdin:
                proc = subprocess.run(self._cmd(cmd), stdin=stdin, capture_output=True, env=self._env(), check=False)
        except OSError as exc:
            raise ConfigError(f"{cmd[0]}: cannot run: {exc.strerror}") from exc
        if proc.returncode != 0:
            raise tool_failure(cmd[0], proc.returncode, proc.stderr)
        return proc.stdout

    def stream(self, cmd: list[str]) -> BinaryIO:
        try:
            proc = subprocess.Popen(self._cmd(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=self._env(), bufsize=1024 * 1024)
        except OSError as exc:
            raise ConfigError(f"{cmd[0]}: cannot run: {exc.strerror}") from exc
        return _ProcessStream(proc, cmd[0])

    def run_with_input(self, cmd: list[str], path: str) -> bytes:
        return self.run(cmd, stdin_path=path)

    def version(self, tool: str) -> str:
        return self.run([tool, "--version"]).decode().strip()


class DockerTools:
    """Client tools inside a container through the Docker API (CharHub: ``charhub-postgres-1``)."""

    method = "docker"

    def __init__(self, url: PgUrl, container: str) -> None:
        from charhub_ops.docker_exec import ContainerExec

        self.url = url
        self.container = container
        self.exec = ContainerExec(container)

    def run(self, cmd: list[str]) -> bytes:
        return self.exec.run(tool_command(self.url, cmd), env=self.url.tool_env())

    def stream(self, cmd: list[str]) -> BinaryIO:
        return self.exec.stream(tool_command(self.url, cmd), env=self.url.tool_env())

    def run_with_input(self, cmd: list[str], path: str) -> bytes:
        with open(path, "rb") as source:
            return self.exec.run_with_input(tool_command(self.url, cmd), source, env=self.url.tool_env())

    def version(self, tool: str) -> str:
        return self.run([tool, "--version"]).decode().strip()

    def session(self) -> SqlSession:
        # the session reads psql's output as UTF-8, whatever client_encoding the URL asks for
        conninfo = self.url.with_params(client_encoding="UTF8",
                                        application_name=our_application_name(self.url, "psql")).tool_conninfo()
        return self.exec.psql_session(conninfo, env=self.url.tool_env())


def make_tools(url: PgUrl, container: str | None, bindir: str | None = None) -> ToolRunner:
    """Client tools in ``container`` (Docker API) or on this host (``bindir``)."""
    return DockerTools(url, container) if container else LocalTools(url, bindir)


def open_session(url: PgUrl, container: str | None) -> SqlSession:
    """A session on ``url``'s database: psycopg from here, or psql inside ``container``. A context manager."""
    return DockerTools(url, container).session() if container else PsycopgSession(url)


def admin_session(url: PgUrl, container: str | None) -> SqlSession:
    """A session on the server's maintenance database (``postgres``), for CREATE/ALTER/DROP DATABASE."""
    return open_session(url.with_dbname("postgres"), container)
