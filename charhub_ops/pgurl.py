"""PostgreSQL connection URLs: parse, normalise (Prisma-style), redact, turn into libpq env.

CharHub's ``DATABASE_URL`` is Prisma's form (``postgresql://u:p@h:5432/charhub_db?schema=public``),
which libpq rejects because of ``schema``. Prisma-only query parameters are dropped here.
Passwords never go on a command line (``ps`` shows argv): tools get ``PG*`` environment variables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg.conninfo

from charhub_ops.errors import ConfigError

__all__ = ["PgUrl", "parse_pg_url"]

# Query parameters that Prisma understands and libpq does not.
PRISMA_ONLY = frozenset(
    {"schema", "connection_limit", "pool_timeout", "pgbouncer", "socket_timeout",
     "statement_cache_size", "sslaccept", "sslidentity", "sslpassword"}
)
_ENV = {
    "host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
    "dbname": "PGDATABASE", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY", "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME", "options": "PGOPTIONS",
}


@dataclass(frozen=True)
class PgUrl:
    """A validated libpq connection string (may contain a password: never log ``conninfo``)."""

    conninfo: str
    params: dict[str, str]
    setting: str = "database_url"

    @property
    def dbname(self) -> str:
        return self.params.get("dbname") or self.params.get("user") or "postgres"

    def with_dbname(self, dbname: str) -> PgUrl:
        params = {**self.params, "dbname": dbname}
        return PgUrl(psycopg.conninfo.make_conninfo(**params), params, self.setting)

    def env(self) -> dict[str, str]:
        """libpq environment variables for client tools (pg_dump, psql, pg_restore)."""
        env = {_ENV[k]: v for k, v in self.params.items() if k in _ENV}
        env.setdefault("PGDATABASE", self.dbname)
        return env

    def redacted(self) -> str:
        """A display form without the password, safe for logs, artifacts and errors."""
        p = self.params
        auth = p.get("user", "")
        if "password" in p:
            auth += ":***"
        host = p.get("host", "") + (f":{p['port']}" if "port" in p else "")
        return f"postgresql://{auth + '@' if auth else ''}{host}/{self.dbname}"

    def __repr__(self) -> str:  # never print the password through repr()
        return f"PgUrl({self.redacted()!r})"


def parse_pg_url(url: str, setting: str = "database_url") -> PgUrl:
    """Parse a ``postgresql://`` URL or a ``key=value`` conninfo, dropping Prisma-only parameters.

    Raises ConfigError naming ``setting`` when the URL is malformed (without echoing it: it may hold a password).
    """
    url = url.strip()
    if not url:
        raise ConfigError(f"{setting}: empty database URL")
    if "://" in url:
        try:
            parts = urlsplit(url)
        except ValueError:
            raise ConfigError(f"{setting}: invalid PostgreSQL URL (malformed host; {ENCODE_HINT})") from None
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigError(
                f"{setting}: unsupported scheme '{parts.scheme}' (expected postgresql://user@host:port/dbname)"
            )
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in PRISMA_ONLY]
        url = urlunsplit(parts._replace(query=urlencode(query)))
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ConfigError(f"{setting}: invalid PostgreSQL connection string: {_strip_secret(str(exc))}"
                          + (f" ({ENCODE_HINT})" if "://" in url else "")) from None
    clean = {k: str(v) for k, v in params.items() if v is not None}
    _refuse_misread(clean, setting)
    return PgUrl(psycopg.conninfo.make_conninfo(**clean), clean, setting)


ENCODE_HINT = "percent-encode @ / ? # % : in the user name and password: %40 %2F %3F %23 %25 %3A"


def _strip_secret(message: str) -> str:
    """libpq's first line, without the token it quotes (it may be part of the password)."""
    return re.sub(r'"[^"]*"', '"…"', message.split("\n")[0])[:200]


def _refuse_misread(params: dict[str, str], setting: str) -> None:
    """An unencoded @ or / in a password makes libpq read part of it as the host or port (which errors
    and logs would then show): refuse such a URL without echoing it."""
    ports = params.get("port", "").split(",")
    if "@" in params.get("host", "") or not all(p.isdigit() or not p for p in ports):
        raise ConfigError(f"{setting}: the URL's host or port is not valid ({ENCODE_HINT})")
