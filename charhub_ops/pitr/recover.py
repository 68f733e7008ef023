"""``pitr recover-table``: bring one table back as it was at a time, beside the live one, touching nothing else.

Undoing a bad ``DELETE`` or ``DROP TABLE``: the cluster is restored at ``at`` into a scratch instance
(:func:`charhub_ops.pitr.scratch.scratch_copy`, always removed), and that one table is copied into the live
database as ``<table>_recovered_<YYYYMMDDHHMMSS>`` (the target time in UTC), in the table's schema. The
operator then compares and moves the rows back with SQL of their choosing: nothing in the live database
is changed but the new table.

Contracts:

``plan_recovery(session, table, at, database) -> RecoverPlan``
    Checks before anything is restored: ``--table`` (``name`` or ``schema.name``, exact case as Prisma
    creates them) and an aware ``--at``; the schema must exist in the live database and the new name must
    not (ConfigError, one line). Reads only.
``recover_table(pgb, plan, live_url, *, work_dir=None) -> RecoverResult``
    Restores, checks the table existed at ``at`` (NotFoundError otherwise), then in ONE live transaction:
    re-checks that the new name is still free, ``CREATE TABLE`` with the same column names and types —
    no defaults, constraints, indexes, foreign keys, triggers or sequences (nothing that could fail or
    fire; NOT NULL neither) — and streams the rows with ``COPY ... TO STDOUT`` on the scratch instance into
    ``COPY ... FROM STDIN`` on the live one (text format, bounded memory). A failure rolls the
    transaction back: the live database is as before. Identifiers always go through ``psycopg.sql``.
    With the database in a container: the scratch instance is a new container, the new table is built there
    and moved with ``pg_dump -Fc -t`` → ``pg_restore --single-transaction`` between the two containers.
``dry run``: the caller stops after ``plan_recovery`` and prints ``RecoverPlan.describe()``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from charhub_ops.docker_exec import ContainerExec
from charhub_ops.errors import ConfigError, DatabaseError, NotFoundError
from charhub_ops.pgurl import PgUrl
from charhub_ops.pitr.command import PgBackRest
from charhub_ops.pitr.restore import RestoreResult, Target
from charhub_ops.pitr.scratch import scratch_copy
from charhub_ops.postgres import PsycopgSession, SqlSession, open_session, tool_command

__all__ = ["RecoverPlan", "RecoverResult", "split_table", "recovered_name", "plan_recovery", "recover_table"]

_EXISTS = ("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
           "WHERE n.nspname = {} AND c.relname = {}")
_COLUMNS = """SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = {} AND c.relname = {} AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum"""


def split_table(table: str) -> tuple[str, str]:
    """``schema.name`` or ``name`` (schema public) → (schema, name); ConfigError naming ``--table``."""
    schema, dot, name = table.strip().partition(".")
    if not dot:
        schema, name = "public", schema
    if not schema or not name or len(name) > 63 or "." in name:
        raise ConfigError(f"--table: '{table}' is not a table name (name or schema.name)")
    return schema, name


def recovered_name(name: str, at: datetime) -> str:
    """``<name>_recovered_<YYYYMMDDHHMMSS>`` (UTC); the table name is shortened to keep 63 bytes."""
    suffix = f"_recovered_{at.astimezone(UTC):%Y%m%d%H%M%S}"
    keep = name
    while len((keep + suffix).encode()) > 63:
        keep = keep[:-1]
    return keep + suffix


@dataclass(frozen=True)
class RecoverPlan:
    schema: str
    table: str
    at: datetime
    database: str
    new_name: str
    live_exists: bool  # the table still exists in the live database (False: it was dropped)

    @property
    def target(self) -> Target:
        return Target.at(self.at)

    def describe(self) -> str:
        now = "exists" if self.live_exists else "is gone"
        return (f"restore the cluster at {self.target.describe()} into a scratch instance (removed afterwards), "
                f"copy {self.schema}.{self.table} (live: {now}) into a NEW table "
                f"{self.schema}.{self.new_name} of database {self.database}; nothing else is changed")


@dataclass(frozen=True)
class RecoverResult:
    plan: RecoverPlan
    rows: int
    columns: int
    seconds: float
    restored: RestoreResult


def _exists(session: SqlSession, schema: str, name: str) -> bool:
    return bool(session.query(sql.SQL(_EXISTS).format(sql.Literal(schema), sql.Literal(name)).as_string(None)))


def plan_recovery(session: SqlSession, table: str, at: datetime | None, database: str) -> RecoverPlan:
    if at is None or at.tzinfo is None:
        raise ConfigError("--at: a time with a time zone is required (e.g. 2026-12-05T01:30:00Z)")
    schema, name = split_table(table)
    if not session.query(sql.SQL("SELECT 1 FROM pg_namespace WHERE nspname = {}").format(
            sql.Literal(schema)).as_string(None)):
        raise ConfigError(f"--table: schema '{schema}' does not exist in database {database}")
    new = recovered_name(name, at)
    if _exists(session, schema, new):
        raise ConfigError(f"--table: {schema}.{new} already exists in database {database}; recover-table never "
                          "overwrites (drop or rename it first)")
    return RecoverPlan(schema=schema, table=name, at=at.astimezone(UTC), database=database, new_name=new,
                       live_exists=_exists(session, schema, name))


def _columns(conn: psycopg.Connection, plan: RecoverPlan) -> list[tuple[str, str]]:
    query = sql.SQL(_COLUMNS).format(sql.Literal(plan.schema), sql.Literal(plan.table))
    columns = [(str(n), str(t)) for n, t in conn.execute(query).fetchall()]
    if not columns:
        raise NotFoundError(f"recover-table: {plan.schema}.{plan.table} did not exist in database {plan.database} "
                            f"at {plan.target.describe()}")
    return columns


def _create(new: sql.Identifier, columns: list[tuple[str, str]]) -> sql.Composed:
    """CREATE TABLE with the column names and types only (format_type's text: no defaults, no constraints)."""
    return sql.SQL("CREATE TABLE {} ({})").format(new, sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns))


def _copy(source: psycopg.Connection, live: psycopg.Connection, plan: RecoverPlan,
          columns: list[tuple[str, str]]) -> int:
    """CREATE the new table and stream the rows, in one live transaction; returns the rows copied."""
    names = sql.SQL(", ").join(sql.Identifier(n) for n, _ in columns)
    new = sql.Identifier(plan.schema, plan.new_name)
    create = _create(new, columns)
    read = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(names, sql.Identifier(plan.schema, plan.table))
    with live.transaction(), live.cursor() as cur:
        if cur.execute(sql.SQL(_EXISTS).format(sql.Literal(plan.schema), sql.Literal(plan.new_name))).fetchone():
            raise ConfigError(f"--table: {plan.schema}.{plan.new_name} appeared meanwhile; nothing was changed")
        cur.execute(create)
        with source.cursor().copy(read) as out, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(new, names)) as inp:
            for chunk in out:
                inp.write(chunk)
        return cur.rowcount


def _copy_in_containers(pgb: PgBackRest, scratch, plan: RecoverPlan, url: PgUrl) -> tuple[int, int]:
    """Container mode: the new table is built in the scratch instance (same columns, no constraints), then
    ``pg_dump -Fc -t`` of it in the scratch container is streamed into ``pg_restore --single-transaction`` in the
    database container (nothing but that table; a failure rolls back). Returns (rows, columns)."""
    new = sql.Identifier(plan.schema, plan.new_name)
    with scratch.session(url) as session:
        columns = [(str(n), str(t)) for n, t in session.query(
            sql.SQL(_COLUMNS).format(sql.Literal(plan.schema), sql.Literal(plan.table)).as_string(None))]
        if not columns:
            raise NotFoundError(f"recover-table: {plan.schema}.{plan.table} did not exist in database "
                                f"{plan.database} at {plan.target.describe()}")
        names = sql.SQL(", ").join(sql.Identifier(n) for n, _ in columns)
        session.query(_create(new, columns).as_string(None))
        ((rows,),) = session.query(sql.SQL("WITH i AS (INSERT INTO {} SELECT {} FROM {} RETURNING 1) SELECT count(*) "
                                           "FROM i").format(new, names, sql.Identifier(plan.schema, plan.table))
                                   .as_string(None))
    with open_session(url, pgb.container) as live:
        if _exists(live, plan.schema, plan.new_name):
            raise ConfigError(f"--table: {plan.schema}.{plan.new_name} appeared meanwhile; nothing was changed")
    source_url = scratch.url(url)
    dump = ContainerExec(scratch.name, scratch.client).stream(tool_command(source_url, [
        "pg_dump", "-Fc", "--no-owner", "--no-privileges", "-t", new.as_string(None)]), env=source_url.tool_env())
    with dump:
        ContainerExec(pgb.container, scratch.client).run_with_input(tool_command(url, [
            "pg_restore", "--single-transaction", "--no-owner", "--no-privileges"]), dump, env=url.tool_env())
    return int(rows), len(columns)


def recover_table(pgb: PgBackRest, plan: RecoverPlan, live_url: PgUrl, *, work_dir: str | None = None,
                  timeout: float = 3600.0) -> RecoverResult:
    started = time.monotonic()
    url = live_url.with_dbname(plan.database)
    with scratch_copy(pgb, plan.target, url, work_dir, timeout) as (scratch, restored):
        if pgb.container:
            rows, ncolumns = _copy_in_containers(pgb, scratch, plan, url)
        else:
            try:
                with PsycopgSession(scratch.url(url)) as source, PsycopgSession(url) as live:
                    columns = _columns(source.conn, plan)
                    rows, ncolumns = _copy(source.conn, live.conn, plan, columns), len(columns)
            except psycopg.Error as exc:
                raise DatabaseError(f"recover-table: {str(exc).strip().splitlines()[0]}") from exc
    return RecoverResult(plan=plan, rows=rows, columns=ncolumns, seconds=time.monotonic() - started,
                         restored=restored)
