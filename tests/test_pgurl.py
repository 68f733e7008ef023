"""Database URLs: malformed ones fail without echoing a user name or password, and every connection
parameter reaches the client tools (pg_dump, psql, ...) the way it reaches psycopg, password not on argv."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from charhub_ops.errors import ConfigError, DatabaseError
from charhub_ops.pgurl import PRISMA_ONLY, SECRET_KEYWORDS, parse_pg_url
from charhub_ops.postgres import DockerTools, LocalTools, our_application_name, tool_command

USER, PASSWORD = "dbuser7q", "Kx8v-Q71m"
EXE = str(Path(sys.executable).with_name("charhub-ops"))

# (id, url, password as written in it)
MALFORMED = [
    ("bad-percent-encoding", f"postgresql://{USER}:Kx8v%zz-Q71m@db.example/app", "Kx8v%zz-Q71m"),
    ("bad-percent-in-user", f"postgresql://{USER}%g:{PASSWORD}@db.example/app", PASSWORD),
    ("port-not-a-number", f"postgresql://{USER}:{PASSWORD}@db.example:5x32/app", PASSWORD),
    ("port-out-of-range", f"postgresql://{USER}:{PASSWORD}@db.example:99999/app", PASSWORD),
    ("bad-scheme", f"postgresq://{USER}:{PASSWORD}@db.example/app", PASSWORD),
    ("ipv6-unbalanced", f"postgresql://{USER}:{PASSWORD}@[::1/app", PASSWORD),
    ("ipv6-empty", f"postgresql://{USER}:{PASSWORD}@[]/app", PASSWORD),
    ("space-in-password", f"postgresql://{USER}:Kx8v Q71m@db.example/app", "Kx8v Q71m"),
    ("space-in-host", f"postgresql://{USER}:{PASSWORD}@db example/app", PASSWORD),
    ("unencoded-at", f"postgresql://{USER}:Kx8v@Q71m@db.example/app", "Kx8v@Q71m"),
    ("unencoded-slash", f"postgresql://{USER}:Kx8v/Q71m@db.example/app", "Kx8v/Q71m"),
    ("query-without-equals", f"postgresql://{USER}:{PASSWORD}@db.example/app?sslmode", PASSWORD),
    ("query-two-equals", f"postgresql://{USER}:{PASSWORD}@db.example/app?sslmode=a=b", PASSWORD),
    ("query-unknown", f"postgresql://{USER}:{PASSWORD}@db.example/app?Kx8vQ71m=1", "Kx8vQ71m"),
    ("query-nul", f"postgresql://{USER}:{PASSWORD}@db.example/app?application_name=%00", PASSWORD),
    ("password-in-query", f"postgresql://db.example/app?user={USER}&password=Kx8v%Q71m", "Kx8v%Q71m"),
    ("conninfo-missing-equals", f"host=db.example user={USER} password={PASSWORD} dbname", PASSWORD),
    ("conninfo-unterminated", f"host=db.example user={USER} password='{PASSWORD}", PASSWORD),
    ("conninfo-space", f"host=db.example user={USER} password=Kx8v Q71m", "Kx8v Q71m"),
    ("conninfo-unknown-key", f"host=db.example user={USER} password={PASSWORD} bogus=1", PASSWORD),
    ("conninfo-password-as-key", f"host=db.example user={USER} Kx8vQ71m", "Kx8vQ71m"),
]


def leaks(text: str, password: str) -> list[str]:
    """Every form of the user name or password (or a 4+ character piece of it) found in ``text``."""
    forms = {USER, password, quote(password, safe="")} | {p for p in re.split(r"[^A-Za-z0-9]+", password)
                                                          if len(p) >= 4}
    return [form for form in forms if form in text]


@pytest.mark.parametrize(("url", "password"), [case[1:] for case in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_url_errors_name_the_setting_and_echo_no_user_info(url, password):
    with pytest.raises(ConfigError) as info:
        parse_pg_url(url, setting="Secret block 'prod-db'")
    message = str(info.value)
    assert message.startswith("Secret block 'prod-db': ") and "\n" not in message
    assert leaks(message, password) == []
    assert info.value.__cause__ is None and not info.value.transient


def _assert_one_clean_error(name: str, code: int, out: str, password: str) -> None:
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, (name, out)
    assert "database_url" in errors[0] and "Traceback" not in out, (name, out)
    assert leaks(out, password) == [], name


def test_malformed_urls_through_the_cli_print_one_line_without_user_info(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from charhub_ops.cli import app

    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", "unset")  # the CLI puts --database-url there: restored after
    for name, url, password in MALFORMED:
        result = CliRunner().invoke(app, ["backup", "--database-url", url, "--to", f"file://{tmp_path}/repo"])
        _assert_one_clean_error(name, result.exit_code, result.output, password)


@pytest.mark.parametrize("name", ["bad-percent-encoding", "ipv6-unbalanced", "unencoded-at", "conninfo-space"])
def test_malformed_url_through_the_installed_command(name, tmp_path):
    (url, password), = [case[1:] for case in MALFORMED if case[0] == name]
    proc = subprocess.run([EXE, "backup", "--database-url", url, "--to", f"file://{tmp_path}/repo"],
                          capture_output=True, text=True, timeout=300)
    _assert_one_clean_error(name, proc.returncode, proc.stdout + proc.stderr, password)


def test_malformed_url_in_a_secret_block_names_the_block(prefect_server):
    from prefect.blocks.system import Secret

    from charhub_ops.settings import load_settings
    from tasks.common import database_url

    Secret(value=f"postgresql://{USER}:Kx8v%zz-Q71m@db.example/app").save("h2-bad-url", overwrite=True)
    with pytest.raises(ConfigError) as info:
        database_url(load_settings().database, "h2-bad-url")
    assert str(info.value).startswith("Secret block 'h2-bad-url': invalid PostgreSQL connection string")
    assert leaks(str(info.value), "Kx8v%zz-Q71m") == []


# --- every parameter reaches the tools ----------------------------------------------------------------------

VALUES = {"port": "5433", "host": "db2.example", "dbname": "other", "user": "someone", "options": "-c a=b"}
TOOL_KEYWORDS = sorted(opt.keyword.decode() for opt in psycopg.pq.Conninfo.get_defaults()
                       if opt.keyword.decode() not in SECRET_KEYWORDS | PRISMA_ONLY)


@pytest.mark.parametrize("keyword", TOOL_KEYWORDS)
def test_every_libpq_parameter_reaches_the_tools_as_it_reaches_psycopg(keyword):
    value = VALUES.get(keyword, "v-1")
    url = parse_pg_url(f"postgresql://{USER}:{PASSWORD}@db.example/app?{keyword}={quote(value)}&schema=public")
    assert url.params[keyword] == value  # what psycopg gets (url.conninfo)
    for dbname in (url.dbname, "restore_target"):
        target = url.with_dbname(dbname)
        argv = tool_command(target, ["pg_dump", "-Fc"])
        assert argv[0] == "pg_dump" and argv[1].startswith("--dbname=") and argv[2:] == ["-Fc"]
        given = psycopg.conninfo.conninfo_to_dict(argv[1].removeprefix("--dbname="))
        ours = {"application_name": our_application_name(target, "pg_dump")}  # marked ours for the monitor
        assert given == {k: v for k, v in target.params.items() if k != "password"} | ours
        assert given["dbname"] == dbname and (keyword in ("dbname", "application_name") or given[keyword] == value)
        assert PASSWORD not in " ".join(argv) and target.tool_env() == {"PGPASSWORD": PASSWORD}


def test_multi_host_urls_keep_every_host():
    url = parse_pg_url(f"postgresql://{USER}:{PASSWORD}@h1:5432,h2:5433/app?target_session_attrs=read-write")
    given = psycopg.conninfo.conninfo_to_dict(tool_command(url, ["psql"])[1].removeprefix("--dbname="))
    assert (given["host"], given["port"], given["target_session_attrs"]) == ("h1,h2", "5432,5433", "read-write")
    assert repr(url) == "PgUrl('postgresql://dbuser7q:***@h1:5432,h2:5433/app')"


def test_tool_command_leaves_other_programs_and_rejects_another_database():
    url = parse_pg_url(f"postgresql://{USER}:{PASSWORD}@db.example/app")
    assert tool_command(url, ["pg_dump", "--version"]) == ["pg_dump", "--version"]
    assert tool_command(url, ["sh", "-c", "true"]) == ["sh", "-c", "true"]
    assert tool_command(url, ["pg_restore", "-d", "app", "x.pgc"])[2:] == ["x.pgc"]  # its own database: dropped
    with pytest.raises(ValueError, match="with_dbname"):
        tool_command(url, ["psql", "-d", "elsewhere"])


def test_other_secrets_never_go_on_a_command_line():
    url = parse_pg_url(f"postgresql://{USER}@db.example/app?oauth_client_secret=Kx8vQ71m")
    with pytest.raises(ConfigError, match="oauth_client_secret cannot be given") as info:
        tool_command(url, ["pg_dump"])
    assert "Kx8vQ71m" not in str(info.value)


# --- for real: local tools and tools in a container ---------------------------------------------------------

SETTINGS_SQL = ("SELECT current_setting('search_path'), current_setting('application_name'), "
                "current_setting('client_encoding')")
QUERY = "options=-c%20search_path%3Dfoo&application_name=h2probe&client_encoding=LATIN1"
# psql's shell escape shows what the OS sees: psql's own argv and its PGPASSWORD
ARGV = ["psql", "-X", "-A", "-t", "-c", '\\! tr "\\0" " " < /proc/$PPID/cmdline; echo; echo "$PGPASSWORD"']


def _with_password(url: str, query: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1) + ("&" if "?" in url else "?") + query


def test_local_tools_get_every_parameter_and_the_password_only_in_their_environment(database):
    url = parse_pg_url(_with_password(database, QUERY + "&target_session_attrs=read-write&hostaddr=127.0.0.1"))
    tools = LocalTools(url)
    settings = tools.run(["psql", "-X", "-A", "-t", "-c", SETTINGS_SQL]).decode().strip()
    assert settings == "foo|charhub-ops:h2probe|LATIN1"  # the URL's application_name, marked ours
    argv, env = tools.run(ARGV).decode().splitlines()
    assert "application_name=charhub-ops:h2probe" in argv and PASSWORD not in argv and env == PASSWORD


def test_local_pg_dump_honours_target_session_attrs(database):
    tools = LocalTools(parse_pg_url(_with_password(database, "target_session_attrs=read-only")))
    with pytest.raises(DatabaseError, match="read-only") as info:  # a primary is not read-only: refused
        with tools.stream(["pg_dump", "-Fc"]) as out:
            out.read()
    assert not info.value.transient and PASSWORD not in str(info.value)


@pytest.mark.docker
def test_tools_in_a_container_get_every_parameter(pg_container):
    url = parse_pg_url(_with_password("postgresql://postgres@/postgres?host=/var/run/postgresql", QUERY))
    tools = DockerTools(url, pg_container.name)
    settings = tools.run(["psql", "-X", "-A", "-t", "-c", SETTINGS_SQL]).decode().strip()
    assert settings == "foo|charhub-ops:h2probe|LATIN1"  # the URL's application_name, marked ours
    with tools.session() as session:
        assert session.query(SETTINGS_SQL) == [("foo", "charhub-ops:h2probe", "UTF8")]  # it pins UTF8 itself
    argv, env = tools.run(ARGV).decode().splitlines()
    assert "application_name=charhub-ops:h2probe" in argv and PASSWORD not in argv and env == PASSWORD


@pytest.mark.parametrize(("url", "schema", "conninfo_has"), [
    ("postgresql://u:p@h:5432/charhub_db?schema=tenant", "tenant", "dbname=charhub_db"),
    ("postgresql://u@h/db?sslmode=disable&schema=My%20Schema&connection_limit=5", "My Schema", "sslmode=disable"),
    ("postgresql://u@h/db?schema=public", "public", "host=h"),
    ("postgresql://u@h/db", None, "host=h"),
    ("host=h dbname=db", None, "dbname=db"),
])
def test_prisma_schema_is_kept_apart_from_the_libpq_parameters(url, schema, conninfo_has):
    parsed = parse_pg_url(url)
    assert parsed.prisma_schema == schema and conninfo_has in parsed.conninfo and "schema" not in parsed.params
    assert parsed.with_dbname("other").prisma_schema == schema
