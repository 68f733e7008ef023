"""Lint pending migrations with squawk, then judge each finding by the live size of the table it touches.

squawk (``squawk-cli`` ships the binary) knows the rules and honours ``-- squawk-ignore`` comments; it
cannot see the database. :func:`classify` (pure) adds what it cannot know: a lock or rewrite rule on a
big table — at least ``big_rows`` rows (``pg_class.reltuples``) **or** ``big_bytes`` bytes
(``pg_total_relation_size``: a table of few wide rows is big too) — **blocks** the run unless accepted
(``--accept RULE[:migration]``); on a small table, or one created by this or an earlier pending migration
(empty), it is a **note**. ``CREATE TABLE IF NOT EXISTS`` of a table that exists creates nothing: the table
keeps its real size. ``require-lock-timeout`` / ``require-statement-timeout`` are **satisfied** by the runner
(session-level timeouts that hold for the whole file, also after the file's own COMMIT). Type hygiene is a
**note**; compatibility rules (dropping or renaming) are **warn**ings; a syntax error **blocks**.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from charhub_ops.errors import ConfigError
from charhub_ops.migrations.plan import MigrationFile
from charhub_ops.migrations.sqltext import created_tables, named_table, offset_of, split_statements, statement_at
from charhub_ops.pgerrors import db_errors

__all__ = ["Finding", "TableSize", "LintItem", "Accept", "LOCK_RULES", "parse_accepts", "run_squawk",
           "table_sizes", "classify", "lint_pending", "blocking"]

LOCK_RULES = {
    "require-concurrent-index-creation": "SHARE: writes wait for the whole index build",
    "require-concurrent-index-deletion": "ACCESS EXCLUSIVE while the index is dropped",
    "constraint-missing-not-valid": "writes wait while the whole table is validated",
    "adding-foreign-key-constraint": "SHARE ROW EXCLUSIVE on both tables while the table is validated",
    "adding-not-nullable-field": "ACCESS EXCLUSIVE while the whole table is scanned",
    "adding-required-field": "ACCESS EXCLUSIVE; fails if the table has rows",
    "changing-column-type": "ACCESS EXCLUSIVE and a rewrite of the table and its indexes",
    "disallowed-unique-constraint": "ACCESS EXCLUSIVE while the unique index is built",
    "adding-field-with-default": "ACCESS EXCLUSIVE and a table rewrite (volatile default)",
    "adding-serial-primary-key-field": "ACCESS EXCLUSIVE and a table rewrite",
    "ban-alter-domain-with-add-constraint": "every table using the domain is scanned",
}
SATISFIED = {"require-lock-timeout", "require-statement-timeout"}
NOTES = {"prefer-bigint-over-int", "prefer-bigint-over-smallint", "prefer-timestamp-tz", "prefer-text-field",
         "ban-char-field", "prefer-identity", "prefer-robust-stmts", "ban-create-domain-with-constraint"}
RUNNER_NOTE = ("satisfied by the runner: every migration runs with a session-level lock_timeout (retried) "
               "and statement_timeout for the whole file, reset after it")
BIG_BYTES = 1 << 30
SIZE_SQL = """SELECT n.nspname, c.relname, c.reltuples, pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)"""


@dataclass(frozen=True)
class Finding:
    """One squawk finding, 1-based line and column, with the table its statement names (if any)."""

    migration: str
    rule: str
    level: str
    line: int
    column: int
    message: str
    help: str | None
    table: str | None = None


@dataclass(frozen=True)
class TableSize:
    rows: int
    bytes: int


@dataclass(frozen=True)
class LintItem:
    migration: str
    rule: str
    level: str  # squawk's level (Warning | Error)
    line: int
    message: str
    help: str | None
    table: str | None
    table_rows: int | None
    table_bytes: int | None
    lock: str | None
    verdict: str  # block | accepted | warn | note | satisfied
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Accept:
    rule: str
    migration: str | None = None

    def covers(self, finding: Finding) -> bool:
        return self.rule == finding.rule and self.migration in (None, finding.migration)


def parse_accepts(values: list[str]) -> list[Accept]:
    """``RULE`` or ``RULE:migration_name`` → Accept; ConfigError on an empty rule."""
    accepts = []
    for value in values:
        rule, _, migration = value.partition(":")
        if not rule.strip():
            raise ConfigError(f"--accept {value!r}: expected RULE or RULE:MIGRATION")
        accepts.append(Accept(rule.strip(), migration.strip() or None))
    return accepts


def squawk_binary() -> str:
    beside = Path(sys.executable).with_name("squawk")
    found = str(beside) if beside.exists() else shutil.which("squawk")
    if not found:
        raise ConfigError("squawk: not installed (the squawk-cli package provides it)")
    return found


def _squawk(root: Path, relative: list[str], pg_major: int, in_transaction: bool) -> list[dict]:
    if not relative:
        return []
    cmd = [squawk_binary(), "--reporter", "json", "--pg-version", f"{pg_major}.0", *relative]
    if in_transaction:
        cmd.insert(-len(relative), "--assume-in-transaction")
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"squawk: cannot run: {exc}") from exc
    if proc.returncode not in (0, 1) or not proc.stdout.strip().startswith("["):
        raise ConfigError(f"squawk: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:300]}")
    return json.loads(proc.stdout)


def run_squawk(root: Path, files: list[MigrationFile], pg_major: int) -> list[Finding]:
    """squawk's findings on ``files`` (in ``root``), with 1-based lines and the table of each statement.
    CONCURRENTLY files are linted as running outside a transaction (they do)."""
    rel = {f.name: f"{f.name}/migration.sql" for f in files}
    raw = _squawk(root, [rel[f.name] for f in files if not f.concurrent], pg_major, True)
    raw += _squawk(root, [rel[f.name] for f in files if f.concurrent], pg_major, False)
    texts = {f.name: (root / rel[f.name]).read_text(errors="replace") for f in files}
    findings = []
    for item in raw:
        name = Path(item["file"]).parent.name
        text = texts.get(name, "")
        statement = statement_at(split_statements(text), offset_of(text, item["line"], item["column"]))
        findings.append(Finding(name, item["rule_name"], item["level"], item["line"] + 1, item["column"] + 1,
                                item["message"], item.get("help"), named_table(statement.text) if statement else None))
    order = {f.name: i for i, f in enumerate(files)}
    return sorted(findings, key=lambda f: (order.get(f.migration, 0), f.line, f.column, f.rule))


def table_sizes(conn: psycopg.Connection, tables: set[str], cap: int) -> dict[str, TableSize]:
    """Row estimate (pg_class.reltuples; a count up to ``cap`` when never analysed) and total size of each
    existing table; tables that do not exist are left out."""
    sizes = {}
    for name in sorted(tables):
        regclass = sql.Identifier(*name.split(".", 1)).as_string(conn)
        with db_errors(f"size of {name}"):
            row = conn.execute(SIZE_SQL, [regclass]).fetchone()
            if row is None:
                continue
            schema, rel, tuples, size = row
            if tuples < 0:
                tuples = conn.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {}.{} LIMIT %s) x").format(
                    sql.Identifier(schema), sql.Identifier(rel)), [cap]).fetchone()[0]
        sizes[name] = TableSize(int(tuples), int(size))
    return sizes


def _mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"


def _judge(f: Finding, size: TableSize | None, created: set[str], big_rows: int,
           big_bytes: int) -> tuple[str, str]:
    if f.rule in SATISFIED:
        return "satisfied", RUNNER_NOTE
    if f.rule == "syntax-error":
        return "block", "squawk cannot parse this statement"
    if f.rule in NOTES:
        return "note", "type hygiene"
    if f.rule not in LOCK_RULES:
        return "warn", "not a lock rule: check the app is compatible with this change"
    if f.table is None:
        return "warn", "table not identified: check its size by hand"
    if f.table in created or f.table.rsplit(".", 1)[-1] in created:
        return "note", "the table is created by a pending migration: empty"
    if size is None:
        return "note", "the table does not exist yet"
    if size.rows >= big_rows:
        return "block", f"{size.rows} rows ≥ {big_rows} (setting migrate_big_table_rows)"
    if size.bytes >= big_bytes:
        return "block", (f"{_mib(size.bytes)} ≥ {_mib(big_bytes)} (setting migrate_big_table_bytes; "
                         f"{size.rows} rows)")
    return "note", f"{size.rows} rows, {_mib(size.bytes)}: short lock"


def classify(findings: list[Finding], sizes: dict[str, TableSize], created: dict[str, set[str]], big_rows: int,
             accepts: list[Accept], big_bytes: int = BIG_BYTES) -> list[LintItem]:
    """Pure policy: one LintItem per finding. ``created[m]``: tables created by ``m`` or an earlier pending one."""
    items = []
    for f in findings:
        size = sizes.get(f.table) if f.table else None
        verdict, reason = _judge(f, size, created.get(f.migration, set()), big_rows, big_bytes)
        if verdict == "block" and any(a.covers(f) for a in accepts):
            verdict, reason = "accepted", reason + "; accepted with --accept"
        items.append(LintItem(f.migration, f.rule, f.level, f.line, f.message, f.help, f.table,
                              size.rows if size else None, size.bytes if size else None, LOCK_RULES.get(f.rule),
                              verdict, reason))
    return items


def blocking(items: list[LintItem]) -> list[LintItem]:
    return [i for i in items if i.verdict == "block"]


def _created(conn: psycopg.Connection, root: Path, todo: list[MigrationFile], cap: int) -> dict[str, set[str]]:
    """Tables each pending migration (or an earlier one) creates: by CREATE TABLE, or by CREATE TABLE IF NOT
    EXISTS when the table does not exist now (an existing one is not new)."""
    created, so_far = {}, set()
    for f in todo:
        text = (root / f.name / "migration.sql").read_text(errors="replace")
        maybe = created_tables(text, if_not_exists=True)
        existing = {name.rsplit(".", 1)[-1] for name in table_sizes(conn, maybe, cap)}
        so_far = so_far | created_tables(text) | {t for t in maybe if t.rsplit(".", 1)[-1] not in existing}
        created[f.name] = so_far
    return created


def lint_pending(conn: psycopg.Connection, root: Path, files: list[MigrationFile], pending: list[str],
                 pg_major: int, big_rows: int, accepts: list[Accept], big_bytes: int = BIG_BYTES) -> list[LintItem]:
    """squawk on the pending files + live table sizes → classified findings."""
    todo = [f for f in files if f.name in pending]
    findings = run_squawk(root, todo, pg_major)
    created = _created(conn, root, todo, big_rows)
    tables = {f.table for f in findings if f.table and f.rule in LOCK_RULES}
    sizes = table_sizes(conn, tables, big_rows)
    return classify(findings, sizes, created, big_rows, accepts, big_bytes)
