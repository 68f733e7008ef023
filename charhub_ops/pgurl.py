"""PostgreSQL connection URLs: parse, normalise (Prisma-style), redact, hand to client tools.

CharHub's ``DATABASE_URL`` is Prisma's form (``postgresql://u:p@h:5432/charhub_db?schema=public``),
which libpq rejects because of ``schema``. Prisma-only query parameters are dropped here; every other
parameter is kept verbatim and parsed by libpq itself, so psycopg and the client tools see the same thing.
``schema`` is kept apart as :attr:`PgUrl.prisma_schema`: the migration pipeline uses it as Prisma does
(``search_path`` and the schema of ``_prisma_migrations``).

Client tools (pg_dump, pg_dumpall, pg_restore, psql) get the whole connection as a conninfo string
*without* the password (``--dbname=<tool_conninfo>``: visible in ``ps``, harmless) and the password in
``PGPASSWORD`` (``tool_env``). Passwords never go on a command line.

Errors never echo the URL or any part of its user info (user name, password): libpq quotes the
offending token in its messages, so quoted values are dropped and the user info is scrubbed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

import psycopg
import psycopg.conninfo

from charhub_ops.errors import ConfigError

__all__ = ["PgUrl", "parse_pg_url"]

# Query parameters that Prisma understands and libpq does not (or, like sslpassword, means differently).
PRISMA_ONLY = frozenset(
    {"schema", "connection_limit", "pool_timeout", "pgbouncer", "socket_timeout",
     "statement_cache_size", "sslaccept", "sslidentity", "sslpassword"}
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_QUOTED = re.compile(r'"[^"\n]*"')
_OPTIONS = psycopg.pq.Conninfo.get_defaults()
_KEYWORDS = frozenset(opt.keyword.decode() for opt in _OPTIONS)
# password-like parameters (libpq marks them "*"); only the password has an environment variable
SECRET_KEYWORDS = frozenset({opt.keyword.decode() for opt in _OPTIONS if opt.dispchar == b"*"}
                            | {"password", "scram_client_key", "scram_server_key"})
_PUNCTUATION = frozenset({'"="', '"]"', '":"', '"/"'})  # fixed text of libpq's messages, not user input
_SECRET_KV = re.compile(r"(?:^|[\s&?])(?:user|" + "|".join(sorted(SECRET_KEYWORDS)) +
                        r""")\s*=\s*('(?:[^'\\]|\\.)*'?|[^\s&]*)""")


@dataclass(frozen=True)
class PgUrl:
    """A validated libpq connection string (may contain a password: never log ``conninfo``)."""

    conninfo: str
    params: dict[str, str]
    setting: str = "database_url"
    prisma_schema: str | None = None  # Prisma's ?schema= (not a libpq parameter)

    @property
    def dbname(self) -> str:
        return self.params.get("dbname") or self.params.get("user") or "postgres"

    def with_dbname(self, dbname: str) -> PgUrl:
        return self.with_params(dbname=dbname)

    def with_params(self, **params: str) -> PgUrl:
        """The same connection with ``params`` set (they win over the URL's)."""
        merged = {**self.params, **params}
        return PgUrl(psycopg.conninfo.make_conninfo(**merged), merged, self.setting, self.prisma_schema)

    def tool_conninfo(self) -> str:
        """Every connection parameter but the password, for ``--dbname=`` of pg_dump/pg_restore/psql.
        ConfigError when the URL holds another secret (e.g. ``oauth_client_secret``): client tools could
        only get it on their command line."""
        others = sorted(k for k in self.params if k in SECRET_KEYWORDS and k != "password")
        if others:
            raise ConfigError(f"{self.setting}: {', '.join(others)} cannot be given to pg_dump/psql without "
                              f"putting it on a command line; use a password or a passfile")
        return psycopg.conninfo.make_conninfo(**{k: v for k, v in self.params.items() if k != "password"})

    def tool_env(self) -> dict[str, str]:
        """The environment client tools need besides ``tool_conninfo``: the password, if any."""
        return {"PGPASSWORD": self.params["password"]} if "password" in self.params else {}

    def redacted(self) -> str:
        """A display form without the password, safe for logs, artifacts and errors."""
        p = self.params
        auth = p.get("user", "")
        if "password" in p:
            auth += ":***"
        hosts = (p.get("host") or p.get("hostaddr") or "").split(",")
        ports = p["port"].split(",") if p.get("port") else []
        ports += [ports[-1] if len(ports) == 1 else ""] * (len(hosts) - len(ports))
        where = ",".join(h + (f":{port}" if port else "") for h, port in zip(hosts, ports, strict=False))
        return f"postgresql://{auth + '@' if auth else ''}{where}/{self.dbname}"

    def __repr__(self) -> str:  # never print the password through repr()
        return f"PgUrl({self.redacted()!r})"


def parse_pg_url(url: str, setting: str = "database_url") -> PgUrl:
    """Parse a ``postgresql://`` URL or a ``key=value`` conninfo, dropping Prisma-only parameters.

    Raises ConfigError naming ``setting`` when the URL is malformed, without echoing the URL or any
    part of its user name and password."""
    url = url.strip()
    if not url:
        raise ConfigError(f"{setting}: empty database URL")
    scheme, schema = _SCHEME.match(url), None
    if scheme:
        if scheme.group(1) not in ("postgresql", "postgres"):
            raise ConfigError(f"{setting}: unsupported scheme '{scheme.group(1)}' "
                              f"(expected postgresql://user@host:port/dbname)")
        url, schema = _check_uri(url, setting)
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
        clean = {k: str(v) for k, v in params.items() if v is not None}
        _check_ports(clean.get("port", ""), setting)
        return PgUrl(psycopg.conninfo.make_conninfo(**clean), clean, setting, schema)
    except psycopg.Error as exc:
        reason = _scrub(str(exc), url)
        raise ConfigError(f"{setting}: invalid PostgreSQL connection string: {reason}") from None


def _check_uri(url: str, setting: str) -> tuple[str, str | None]:
    """Drop Prisma-only query parameters (the rest verbatim), returning Prisma's ``schema`` apart (decoded);
    reject an unencoded '@' or '/' in the user info."""
    start = url.index("://") + 3
    # libpq's rule: the user info ends at the first '@', unless a '/' comes first (then there is none).
    end = next((i for i in range(start, len(url)) if url[i] in "@/"), len(url))
    host_start = end + 1 if end < len(url) and url[end] == "@" else start
    question = url.find("?", host_start)
    head, query = (url, "") if question < 0 else (url[:question], url[question + 1:])
    if "@" in head[host_start:]:
        raise ConfigError(f"{setting}: the user name or password holds an unencoded '@' or '/' "
                          f"(percent-encode them: %40, %2F)")
    items = [item.split("=", 1) for item in query.split("&") if item]
    kept = ["=".join(kv) for kv in items if unquote(kv[0]) not in PRISMA_ONLY]
    schema = next((unquote(kv[1]) for kv in reversed(items) if unquote(kv[0]) == "schema" and len(kv) == 2
                   and kv[1]), None)
    return head + ("?" + "&".join(kept) if kept else ""), schema


def _check_ports(port: str, setting: str) -> None:
    for value in port.split(",") if port else []:
        if value and not (value.isdigit() and 0 < int(value) < 65536):
            raise ConfigError(f"{setting}: invalid port (expected a number from 1 to 65535)")


def _scrub(message: str, url: str) -> str:
    """libpq's first line without quoted user input and without any user name or password fragment."""
    text = message.strip().split("\n")[0][:200]
    text = _QUOTED.sub(lambda m: m.group(0) if m.group(0) in _PUNCTUATION or m.group(0)[1:-1] in _KEYWORDS
                       else '"…"', text)
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _secrets(url: str) -> set[str]:
    """Every user name and password in ``url`` as written and percent-decoded (URL user info,
    ``user=``/``password=`` in a conninfo or a URL query)."""
    found = [v.strip("'") for v in _SECRET_KV.findall(url)]
    if _SCHEME.match(url):
        start = url.index("://") + 3
        userinfo, at, _ = url[start:].partition("@")
        if at and "/" not in userinfo:
            found += userinfo.split(":", 1)
    return {form for value in found for form in (value, unquote(value)) if form}
