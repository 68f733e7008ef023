"""The backup engine (no Prefect here): preflight, a consistent streamed dump, globals, manifest.

One dump is one pipeline with bounded memory::

    pg_dump -Fc -Z0 --snapshot=S  →  zstd (multi-threaded)  →  age (optional)  →  SHA-256  →  storage

Row counts and sizes of every table are read in the same exported snapshot while pg_dump runs,
so a restore can later be checked against them; so are the database's encoding and collation, so a
restore can create its database with them.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel

from charhub_ops import __version__
from charhub_ops.backup.manifest import DatabaseLocale, Manifest, ObjectRef, TableStat, backup_prefix, manifest_key
from charhub_ops.errors import ConfigError, DatabaseError
from charhub_ops.pgurl import PgUrl
from charhub_ops.postgres import (
    HASH_FORMAT,
    DockerTools,
    SqlSession,
    find_local_tool,
    list_databases,
    list_tables,
    make_tools,
    open_session,
    server_info,
    table_checks,
    tool_major,
)
from charhub_ops.progress import ProgressReader
from charhub_ops.storage import Storage
from charhub_ops.streams import CountingReader, HashingReader, compress, encrypt, recipient_fingerprint

__all__ = ["Preflight", "DumpResult", "preflight", "dump_database", "dump_globals", "build_manifest",
           "write_manifest", "make_tools", "open_session", "choose_local_pg_dump"]

Progress = Callable[[int], None]

_LOCALE_SQL = """
SELECT pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, to_jsonb(d) ->> 'datlocprovider',
       coalesce(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale'), to_jsonb(d) ->> 'daticurules'
FROM pg_database d WHERE d.datname = current_database()"""
_PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}


class Preflight(BaseModel):
    server_version: str
    server_version_num: int
    databases: list[str]
    database_sizes: dict[str, int]
    method: str                     # "local" | "docker"
    pg_dump_version: str
    bindir: str | None = None       # local pg_dump directory
    container: str | None = None


class DumpResult(BaseModel):
    database: str
    backup_id: str
    key: str
    raw_size_bytes: int
    stored_size_bytes: int
    sha256: str
    part_size: int
    snapshot: str
    tables: list[TableStat]
    locale: DatabaseLocale | None = None
    started_at: datetime
    finished_at: datetime


def preflight(url: PgUrl, container: str | None, all_databases: bool = False) -> Preflight:
    """Connect, read the server version, sizes and databases, and choose where pg_dump runs.

    Raises DatabaseError (unreachable server), ConfigError (no pg_dump new enough and no container)."""
    session = open_session(url, container)
    try:
        info = server_info(session)
        databases = list_databases(session) if all_databases else [info.database]
        sizes = {info.database: info.size_bytes}
        if all_databases:
            rows = session.query("SELECT datname, pg_database_size(datname) FROM pg_database "
                                 "WHERE NOT datistemplate AND datallowconn")
            sizes = {str(d): int(s) for d, s in rows}
    finally:
        session.close()
    if container:
        version, bindir = DockerTools(url, container).version("pg_dump"), None
    else:
        path, version = choose_local_pg_dump(info.major)
        bindir = path.rsplit("/", 1)[0]
    return Preflight(server_version=info.version, server_version_num=info.version_num, databases=databases,
                     database_sizes=sizes, method="docker" if container else "local",
                     pg_dump_version=version, bindir=bindir, container=container)


def choose_local_pg_dump(server_major: int) -> tuple[str, str]:
    """The local pg_dump to use for a server of ``server_major``: (path, version text).
    ConfigError suggesting --docker-container when every local pg_dump is older than the server."""
    found = find_local_tool("pg_dump", server_major)
    if found is None:
        have = find_local_tool("pg_dump", 0)
        have_text = f"the local pg_dump is {tool_major(have[1])}" if have else "no local pg_dump was found"
        raise ConfigError(
            f"pg_dump: {have_text} but the server is PostgreSQL {server_major}: install pg_dump ≥ {server_major} "
            f"or run it inside the database container with --docker-container NAME "
            f"(setting CHARHUB_OPS_DOCKER_CONTAINER)")
    return found


def _database_locale(session: SqlSession) -> DatabaseLocale:
    """Encoding and collation of the session's database. The provider columns exist from PostgreSQL 15
    (``daticulocale``, renamed ``datlocale`` in 17; ``daticurules`` from 16): read through ``to_jsonb``
    so that a server without them gives NULL."""
    ((encoding, collate, ctype, provider, locale, rules),) = session.query(_LOCALE_SQL)
    return DatabaseLocale(encoding=str(encoding), collate=str(collate), ctype=str(ctype),
                          provider=_PROVIDERS[str(provider)] if provider else None,
                          provider_locale=_text(locale), icu_rules=_text(rules))


def _text(value) -> str | None:
    return None if value is None else str(value)


def _pipeline(source, recipients: list[str], level: int, threads: int) -> HashingReader:
    stream = compress(source, level, threads)
    if recipients:
        stream = encrypt(stream, recipients)
    return HashingReader(stream)


def dump_database(storage: Storage, url: PgUrl, pre: Preflight, database: str, backup_id: str, *,
                  recipients: list[str], level: int = 3, threads: int = 0, expected_size: int | None = None,
                  hash_limit: int = 0, progress: Progress | None = None) -> DumpResult:
    """Stream a consistent ``pg_dump -Fc`` of ``database`` into ``storage``; count rows (and hash the
    contents of tables up to ``hash_limit`` bytes) in the same snapshot. ``progress`` is told the raw
    dump bytes (before compression), the unit of :func:`charhub_ops.progress.expected_total`."""
    db_url = url.with_dbname(database)
    tools = make_tools(db_url, pre.container, pre.bindir)
    key = backup_prefix(database, backup_id) + "dump.pgc.zst" + (".age" if recipients else "")
    started = datetime.now(UTC)
    session = open_session(db_url, pre.container)
    try:
        session.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = str(session.query("SELECT pg_export_snapshot()")[0][0])
        tables = list_tables(session)
        locale = _database_locale(session)
        counts: dict = {}
        errors: list[BaseException] = []

        def count() -> None:
            try:
                counts.update(table_checks(session, tables, hash_limit))
            except BaseException as exc:  # noqa: BLE001 - re-raised below in the calling thread
                errors.append(exc)

        dump = tools.stream(["pg_dump", "-Fc", "-Z0", f"--snapshot={snapshot}", "--no-password"])
        source = CountingReader(ProgressReader(dump, progress) if progress else dump)
        counter = threading.Thread(target=count, name="row-count", daemon=True)
        counter.start()
        try:
            stored = _pipeline(source, recipients, level, threads)
            put = storage.put_stream(key, stored, expected_size=expected_size)
        finally:
            counter.join()
            dump.close()
        if errors:
            raise errors[0]
        session.query("COMMIT")
    finally:
        session.close()
    stats = [TableStat(schema_name=t.schema, name=t.name, rows=counts[(t.schema, t.name)][0],
                       content_hash=counts[(t.schema, t.name)][1], size_bytes=t.size_bytes) for t in tables]
    return DumpResult(database=database, backup_id=backup_id, key=key, raw_size_bytes=source.count,
                      stored_size_bytes=stored.count, sha256=stored.hexdigest(), part_size=put.part_size,
                      snapshot=snapshot, tables=stats, locale=locale, started_at=started,
                      finished_at=datetime.now(UTC))


def dump_globals(storage: Storage, url: PgUrl, pre: Preflight, database: str, backup_id: str, *,
                 recipients: list[str], level: int = 3) -> tuple[ObjectRef | None, str | None]:
    """``pg_dumpall --globals-only`` (roles, tablespaces) beside the dump. Without the rights to read
    role passwords it retries with ``--no-role-passwords``; returns (object, note)."""
    tools = make_tools(url, pre.container, pre.bindir)
    note = None
    try:
        data = tools.run(["pg_dumpall", "--globals-only", "--no-password"])
    except DatabaseError:
        try:
            data = tools.run(["pg_dumpall", "--globals-only", "--no-role-passwords", "--no-password"])
            note = "role passwords not saved (no permission to read pg_authid)"
        except DatabaseError as exc:
            return None, f"globals not saved: {exc}"
    key = backup_prefix(database, backup_id) + "globals.sql.zst" + (".age" if recipients else "")
    stored = _pipeline(io.BytesIO(data), recipients, level, 1)
    storage.put_stream(key, stored)
    return ObjectRef(key=key, size_bytes=stored.count, sha256=stored.hexdigest()), note


def build_manifest(pre: Preflight, dump: DumpResult, globals_ref: ObjectRef | None, globals_note: str | None,
                   recipients: list[str], level: int) -> Manifest:
    encryption = ({"algorithm": "age", "recipients": [recipient_fingerprint(r) for r in recipients]}
                  if recipients else None)
    return Manifest(
        backup_id=dump.backup_id, database=dump.database, server_version=pre.server_version,
        server_version_num=pre.server_version_num, pg_dump_version=pre.pg_dump_version,
        dump_method=pre.method, started_at=dump.started_at, finished_at=dump.finished_at,
        database_size_bytes=pre.database_sizes.get(dump.database, 0), raw_size_bytes=dump.raw_size_bytes,
        stored_size_bytes=dump.stored_size_bytes, sha256=dump.sha256,
        compression={"algorithm": "zstd", "level": level}, encryption=encryption,
        dump=ObjectRef(key=dump.key, size_bytes=dump.stored_size_bytes, sha256=dump.sha256),
        globals=globals_ref, globals_note=globals_note, snapshot=dump.snapshot, tables=dump.tables,
        tool_version=__version__, locale=dump.locale, hash_format=HASH_FORMAT,
    )


def write_manifest(storage: Storage, manifest: Manifest) -> str:
    """Write the manifest last: only now does the backup exist for list/restore."""
    key = manifest_key(manifest.database, manifest.backup_id)
    storage.put_bytes(key, manifest.model_dump_json(indent=2).encode())
    return key
