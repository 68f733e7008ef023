"""The restore engine (no Prefect): pick a backup, restore it into a NEW database, and check the copy
against the manifest. Reading the dump and feeding pg_restore (stream or file) is :mod:`charhub_ops.restore.datapath`.

Nothing existing is modified here: a target that exists is refused. Swapping a restored copy into
the live name is a separate, guarded step (see :mod:`charhub_ops.restore.swap`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyrage
from psycopg import sql

from charhub_ops.backup.manifest import DatabaseLocale, Manifest, TableStat
from charhub_ops.errors import ConfigError, DatabaseError, NotFoundError, OpsError
from charhub_ops.postgres import SqlSession, TableInfo, table_checks

__all__ = [
    "pick_backup", "load_identities", "restore_name", "database_exists", "ensure_absent",
    "create_database", "create_database_sql",
    "drop_database", "check_restored", "check_tables", "CheckResult", "missing_roles_sql", "existing_roles",
    "run_sql_file",
]


def pick_backup(manifests: list[Manifest], backup: str = "latest", before: datetime | None = None) -> Manifest:
    """From backups newest first: ``latest``, an id, or the newest at or before ``before`` (UTC)."""
    if backup not in ("latest", "", None):
        for m in manifests:
            if m.backup_id == backup:
                return m
        raise NotFoundError(f"backup '{backup}' not found")
    for m in manifests:
        if before is None or m.started_at <= before.astimezone(UTC):
            return m
    when = f" at or before {before.isoformat()}" if before else ""
    raise NotFoundError(f"no complete backup{when}")


def load_identities(path: str | None = None, text: str | None = None, setting: str = "identity") -> list:
    """age identities from a file (or the text of a Prefect Secret block); ConfigError naming ``setting``."""
    if text is None:
        if not path:
            raise ConfigError(f"{setting}: the backup is encrypted: pass --identity FILE "
                              "(or set CHARHUB_OPS_AGE_IDENTITY_FILE)")
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from exc
    keys = [line.strip() for line in text.splitlines() if line.strip().startswith("AGE-SECRET-KEY-")]
    try:
        identities = [pyrage.x25519.Identity.from_str(k) for k in keys]
    except (ValueError, pyrage.IdentityError):
        raise ConfigError(f"{setting}: not a valid age identity file") from None
    if not identities:
        raise ConfigError(f"{setting}: no AGE-SECRET-KEY line found")
    return identities


_ROLE = re.compile(r'^(?:CREATE|ALTER) ROLE ("(?:[^"]|"")+"|[^\s;"]+)[\s;]')


def missing_roles_sql(globals_sql: str, existing: set[str]) -> tuple[str, list[str]]:
    """From ``pg_dumpall --globals-only`` output keep only CREATE/ALTER ROLE of roles that do not exist
    (an existing role's password or attributes are never changed by a restore). Returns (sql, roles)."""
    keep, roles = [], []
    for line in globals_sql.splitlines():
        match = _ROLE.match(line)
        if not match:
            continue
        name = match.group(1)
        name = name[1:-1].replace('""', '"') if name.startswith('"') else name
        if name not in existing:
            keep.append(line)
            if line.startswith("CREATE ROLE"):
                roles.append(name)
    return "\n".join(keep) + ("\n" if keep else ""), roles


def existing_roles(session: SqlSession) -> set[str]:
    return {str(r[0]) for r in session.query("SELECT rolname FROM pg_roles")}


def restore_name(database: str, now: datetime) -> str:
    return f"{database}_restore_{now.astimezone(UTC):%Y%m%d%H%M%S}"[:63]


def database_exists(session: SqlSession, name: str) -> bool:
    statement = sql.SQL("SELECT 1 FROM pg_database WHERE datname = {}").format(sql.Literal(name)).as_string(None)
    return bool(session.query(statement))


def ensure_absent(session: SqlSession, name: str) -> None:
    """ConfigError when database ``name`` exists: a restore never overwrites anything."""
    if database_exists(session, name):
        raise ConfigError(f"database_url: database '{name}' already exists; restore never overwrites "
                          "(choose a new name, or use --replace to swap a verified copy in)")


_PROVIDER_OPTION = {"libc": sql.SQL(" LOCALE_PROVIDER libc"), "icu": sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}"),
                    "builtin": sql.SQL(" LOCALE_PROVIDER builtin BUILTIN_LOCALE {}")}
_LOCALE_ERROR = re.compile(r"locale|encoding|collation|\bICU\b", re.IGNORECASE)


def create_database_sql(name: str, locale: DatabaseLocale | None) -> sql.Composed:
    """CREATE DATABASE ``name``, from template0 with the backup's encoding and collation when it recorded
    them (old manifests: the server's defaults). The provider is always named when known: left out, it
    would be template0's, which may differ from the backup's."""
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if locale is None:
        return statement
    statement += sql.SQL(" TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        sql.Literal(locale.encoding), sql.Literal(locale.collate), sql.Literal(locale.ctype))
    if locale.provider:
        statement += _PROVIDER_OPTION[locale.provider].format(sql.Literal(locale.provider_locale))
    if locale.icu_rules:
        statement += sql.SQL(" ICU_RULES {}").format(sql.Literal(locale.icu_rules))
    return statement


def create_database(session: SqlSession, name: str, locale: DatabaseLocale | None = None) -> None:
    """CREATE DATABASE ``name`` with the backup's ``locale`` (see create_database_sql); refuses (ConfigError)
    when it exists: nothing existing is overwritten. A server that lacks the locale is a ConfigError naming
    it: a restore never silently changes the collation (text indexes, ORDER BY and unique keys depend on it)."""
    ensure_absent(session, name)
    try:
        session.query(create_database_sql(name, locale).as_string(None))
    except DatabaseError as exc:
        if locale is None or not _LOCALE_ERROR.search(str(exc)):
            raise
        wanted = f"encoding {locale.encoding}, LC_COLLATE {locale.collate}, LC_CTYPE {locale.ctype}"
        if locale.provider_locale:
            wanted += f", {locale.provider} locale {locale.provider_locale}"
        raise ConfigError(f"database_url: this server cannot create '{name}' with the backup's locale ({wanted}): "
                          f"{exc}; install that locale on the server or restore to one that has it") from exc


def drop_database(session: SqlSession, name: str) -> None:
    session.query(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)).as_string(None))


def run_sql_file(tools, path: Path) -> None:
    """psql -f ``path`` on ``tools``' database, stopping at the first error (streamed into a container)."""
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", "-d", tools.url.dbname]
    if tools.method == "local":
        tools.run([*cmd, "-f", str(path)])
    else:
        tools.run_with_input([*cmd, "-f", "-"], str(path))


@dataclass
class CheckResult:
    tables: int = 0
    rows: int = 0
    hashed: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _read_checks(session: SqlSession, infos: list[TableInfo], hash_format: int) -> dict:
    """table_checks in a read-only transaction of its own (its output settings are pinned per transaction)."""
    session.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    try:
        return table_checks(session, infos, hash_limit_bytes=0, hash_format=hash_format)
    finally:
        session.query("ROLLBACK")


def check_tables(session: SqlSession, tables: list[TableStat], hash_format: int,
                 with_hashes: bool = True, source: str = "manifest") -> CheckResult:
    """Compare row counts (and content hashes, where ``tables`` have them) of a restored copy with ``tables``
    (a manifest's, or counts read from the live database by ``table_checks``: the same hash either way).
    ``source`` names the reference in the mismatch lines."""
    infos = [TableInfo(t.schema_name, t.name, 0 if (with_hashes and t.content_hash) else 1) for t in tables]
    result = CheckResult(tables=len(infos))
    try:
        found = _read_checks(session, infos, hash_format)
    except OpsError as exc:
        result.mismatches.append(f"cannot read the restored tables: {exc}")
        return result
    for t in tables:
        rows, digest = found.get((t.schema_name, t.name), (None, None))
        name = f"{t.schema_name}.{t.name}"
        if rows is None:
            result.mismatches.append(f"{name}: missing")
            continue
        result.rows += rows
        if rows != t.rows:
            result.mismatches.append(f"{name}: {rows} rows, {source} says {t.rows}")
        elif with_hashes and t.content_hash:
            result.hashed += 1
            if digest != t.content_hash:
                result.mismatches.append(f"{name}: content hash differs from the {source}")
    return result


def check_restored(session: SqlSession, manifest: Manifest, with_hashes: bool = True) -> CheckResult:
    """Compare row counts (and content hashes, where the manifest has them) of a restored copy."""
    return check_tables(session, manifest.tables, manifest.hash_format, with_hashes)
