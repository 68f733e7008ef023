"""A good backup verifies on any server (issue #7 defect 5).

Content hashes must not depend on the server that computes them: its time zone, DateStyle, IntervalStyle,
extra_float_digits, collation or encoding. The source is a database on the host cluster with an ICU en-US
collation (the host cluster itself is C.UTF-8, which sorts like C); it is backed up once and verified on
two other real servers: one started with other output settings, one initialised under LANG=C (SQL_ASCII).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from psycopg import sql

from charhub_ops.backup.manifest import DatabaseLocale, Manifest, ObjectRef
from charhub_ops.errors import ConfigError
from charhub_ops.pgurl import parse_pg_url
from charhub_ops.postgres import PsycopgSession, TableInfo, list_databases, table_checks
from charhub_ops.restore.engine import create_database, create_database_sql, database_exists

SOURCE_SQL = r"""
CREATE TABLE words (word text, note text);  -- no primary key; the row text starts with the word
INSERT INTO words VALUES ('apple', 'lower'), ('Apple', 'upper'), ('Äpfel', 'umlaut'), ('éclair', 'accent'),
 ('eclair', NULL), ('zebra', 'z'), ('Zebra', 'Z'), ('😀 smile', 'emoji'), ('a b', 'space'), ('ab', ''),
 ('a-b', 'dash'), (NULL, 'null word'), ('apple', 'lower');
CREATE TABLE typed (
    id int PRIMARY KEY, at timestamptz, local_at timestamp, day date, span interval, f4 real, f8 double precision,
    amount numeric(20, 6), label text, doc jsonb, tags text[], blob bytea, price money, rel regclass
);
INSERT INTO typed VALUES
 (1, '2026-03-01 12:34:56.789+00', '2026-03-01 23:59:59.5', '2026-12-31', '1 year 2 mons 3 days 04:05:06.5',
  0.1, 0.1, 12345.678901, 'Äpfel', '{"b": 1, "a": [1, 2.50, null]}', '{Apple,apple,"a b"}', '\x00ff10', 12.34, 'typed'),
 (2, '1999-12-31 23:00:00-05', '1999-12-31 19:00', '0044-03-15 BC', '-3 days 00:00:01', 3.4028235e38,
  1::float8 / 3, -0.000001, 'éclair 😀', '[]', '{}', '\x', -1, 'words'),
 (3, 'infinity', '-infinity', '2000-02-29', '0', 'NaN', pi(), 'NaN', '', 'null', ARRAY[NULL, 'Zebra'], NULL, 0, NULL),
 (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"""
ICU_SOURCE = DatabaseLocale(encoding="UTF8", collate="C.UTF-8", ctype="C.UTF-8", provider="icu",
                            provider_locale="en-US")
SOCKET_URL = "postgresql://postgres@/{}?host=/var/run/postgresql"


@pytest.fixture(scope="module")
def icu_source(pg) -> str:
    """The source database on the host cluster (ICU en-US collation); returns its name."""
    name = "xsrc_" + uuid.uuid4().hex[:8]
    with pg.connect() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    with pg.connect(name) as conn:
        conn.execute(SOURCE_SQL)
    return name


@pytest.fixture(scope="module")
def icu_backup(prefect_server, pg, icu_source, tmp_path_factory):
    """The source database backed up with the backup flow into a file repository: (repository, manifest)."""
    from charhub_ops.backup.catalog import list_backups
    from charhub_ops.storage import LocalStorage
    from flows.backup import backup_flow

    root = tmp_path_factory.mktemp("xrepo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARHUB_OPS_DATABASE_URL", pg.url(icu_source))
        backup_flow(repository=f"file://{root}")
    (manifest,) = list_backups(LocalStorage(root))
    return f"file://{root}", manifest


def _hashes(pg, database: str, hash_format: int = 2, **session_settings) -> dict:
    """table_checks of ``database`` in a transaction of a session whose own settings are ``session_settings``."""
    with PsycopgSession(parse_pg_url(pg.url(database))) as session:
        for key, value in session_settings.items():
            session.query(sql.SQL("SELECT set_config({}, {}, false)").format(
                sql.Literal(key), sql.Literal(value)).as_string(None))
        tables = [TableInfo("public", name, 0) for name in ("typed", "words")]
        session.query("BEGIN")
        return table_checks(session, tables, hash_limit_bytes=1, hash_format=hash_format)


@pytest.mark.parametrize("settings", [
    {"TimeZone": "America/St_Johns"}, {"DateStyle": "German, DMY"}, {"DateStyle": "Postgres, MDY"},
    {"IntervalStyle": "iso_8601"}, {"IntervalStyle": "sql_standard"}, {"extra_float_digits": "-15"},
    {"bytea_output": "escape"}, {"search_path": "pg_catalog"},
    {"lc_monetary": "C.UTF-8", "TimeZone": "Pacific/Chatham", "DateStyle": "SQL, YMD", "extra_float_digits": "0"},
])
def test_hashes_ignore_the_session_output_settings(pg, icu_source, settings):
    baseline = _hashes(pg, icu_source)
    assert _hashes(pg, icu_source, **settings) == baseline
    # each setting does change the text: the unpinned hashes of the old format differ
    assert _hashes(pg, icu_source, hash_format=1, **settings) != _hashes(pg, icu_source, hash_format=1)


def test_old_manifests_are_checked_with_their_own_hash_format(pg, icu_source):
    from charhub_ops.backup.manifest import TableStat
    from charhub_ops.restore.engine import check_restored

    old = _hashes(pg, icu_source, hash_format=1)
    assert old != _hashes(pg, icu_source)  # en-US order vs byte order
    manifest = _manifest(tables=[TableStat(schema_name=s, name=n, rows=rows, size_bytes=0, content_hash=digest)
                                 for (s, n), (rows, digest) in old.items()])
    with PsycopgSession(parse_pg_url(pg.url(icu_source))) as session:
        result = check_restored(session, manifest)
    assert result.ok and result.hashed == 2


def test_backup_records_the_locale_and_the_hash_format(icu_backup):
    _, manifest = icu_backup
    assert manifest.locale == ICU_SOURCE
    assert manifest.hash_format == 2
    assert all(t.content_hash for t in manifest.tables)


@pytest.mark.docker
@pytest.mark.parametrize("server", ["pg_other_settings", "pg_sql_ascii"])
@pytest.mark.parametrize("via", ["docker", "tcp"])
def test_a_good_backup_verifies_on_another_server(icu_backup, server, via, request, monkeypatch):
    from flows.verify import verify_flow

    repository, manifest = icu_backup
    other = request.getfixturevalue(server)
    url, container = (SOCKET_URL.format("postgres"), other.name) if via == "docker" else (other.url(), None)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", url)
    result = verify_flow(repository=repository, source={"backup": manifest.backup_id},
                         access={"docker_container": container})
    assert result["mismatches"] == [] and result["ok"]
    assert result["hashed_tables"] == len(manifest.tables) == 2
    assert result["rows"] == 4 + 13


@pytest.mark.docker
def test_restore_creates_the_database_with_the_backup_locale(icu_backup, pg_sql_ascii, monkeypatch):
    from flows.restore import restore_flow

    repository, manifest = icu_backup
    target = "xdst_" + uuid.uuid4().hex[:6]
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", pg_sql_ascii.url(target))
    assert restore_flow(repository=repository, target={"target_database": target})["ok"]
    row = pg_sql_ascii.psql("SELECT pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, daticulocale "
                            f"FROM pg_database WHERE datname = '{target}'")
    assert row.strip() == "UTF8|C.UTF-8|C.UTF-8|i|en-US"  # the server's own default is SQL_ASCII, C
    order = pg_sql_ascii.psql("SELECT string_agg(word, ',' ORDER BY word) FROM words WHERE word ~ '^[aA]'", target)
    assert order.strip() == "a b,a-b,ab,apple,apple,Apple"  # en-US, as in the source; C would put Apple first


def test_a_server_without_the_backup_locale_is_refused_by_name(pg):
    locale = DatabaseLocale(encoding="UTF8", collate="en_US.UTF-8", ctype="en_US.UTF-8")
    name = "xnolocale_" + uuid.uuid4().hex[:6]
    with PsycopgSession(parse_pg_url(pg.url())) as session:
        with pytest.raises(ConfigError, match="en_US.UTF-8.*install that locale"):
            create_database(session, name, locale)
        assert not database_exists(session, name)


@pytest.mark.docker
def test_psycopg_sessions_return_text_on_a_sql_ascii_server(pg_sql_ascii):
    pg_sql_ascii.psql("DROP DATABASE IF EXISTS plain_ascii")
    pg_sql_ascii.psql("CREATE DATABASE plain_ascii")  # the server's default: SQL_ASCII
    pg_sql_ascii.psql("CREATE TABLE t (w text); INSERT INTO t VALUES ('a'), ('b')", "plain_ascii")
    with PsycopgSession(parse_pg_url(pg_sql_ascii.url("plain_ascii"))) as session:
        assert "plain_ascii" in list_databases(session)
        session.query("BEGIN")
        found = table_checks(session, [TableInfo("public", "t", 0)], hash_limit_bytes=1)
    assert list(found) == [("public", "t")] and found["public", "t"][0] == 2


# --- pure: the manifest and the CREATE DATABASE statement ------------------------------------------------------

def _manifest(**extra) -> Manifest:
    at = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    ref = ObjectRef(key="db/20261130T030000Z-abcd/dump.pgc.zst", size_bytes=1, sha256="0" * 64)
    return Manifest(backup_id="20261130T030000Z-abcd", database="db", server_version="16.4", server_version_num=160004,
                    pg_dump_version="pg_dump (PostgreSQL) 16.4", dump_method="local", started_at=at, finished_at=at,
                    database_size_bytes=1, raw_size_bytes=1, stored_size_bytes=1, sha256="0" * 64, dump=ref,
                    tool_version="t", **extra)


def test_an_old_manifest_without_locale_still_loads():
    data = json.loads(_manifest().model_dump_json())
    del data["locale"], data["hash_format"]
    old = Manifest.model_validate_json(json.dumps(data))
    assert old.locale is None and old.hash_format == 1


def test_the_locale_round_trips_through_the_manifest():
    new = _manifest(locale=ICU_SOURCE, hash_format=2)
    assert Manifest.model_validate_json(new.model_dump_json()) == new


@pytest.mark.parametrize(("locale", "expected"), [
    (None, 'CREATE DATABASE "x y"'),
    (DatabaseLocale(encoding="UTF8", collate="en_US.utf8", ctype="en_US.utf8"),  # from PostgreSQL < 15
     """CREATE DATABASE "x y" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'en_US.utf8' LC_CTYPE 'en_US.utf8'"""),
    (DatabaseLocale(encoding="LATIN1", collate="de_DE", ctype="de_DE", provider="libc"),
     """CREATE DATABASE "x y" TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'de_DE' LC_CTYPE 'de_DE' """
     """LOCALE_PROVIDER libc"""),
    (ICU_SOURCE, """CREATE DATABASE "x y" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' """
                 """LC_CTYPE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"""),
    (ICU_SOURCE.model_copy(update={"icu_rules": "&a < b"}),
     """CREATE DATABASE "x y" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' """
     """LC_CTYPE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' ICU_RULES '&a < b'"""),
    (DatabaseLocale(encoding="UTF8", collate="C", ctype="C", provider="builtin", provider_locale="C.UTF-8"),
     """CREATE DATABASE "x y" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' """
     """LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8'"""),
])
def test_create_database_statement_from_the_manifest_locale(locale, expected):
    assert create_database_sql("x y", locale).as_string(None) == expected
