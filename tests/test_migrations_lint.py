"""Lint: squawk on real files, live table sizes from real PostgreSQL, and the pure policy."""

from __future__ import annotations

import psycopg
import pytest

from charhub_ops.errors import ConfigError
from charhub_ops.migrations.ledger import read_migrations
from charhub_ops.migrations.lint import (
    Accept,
    Finding,
    TableSize,
    classify,
    lint_pending,
    parse_accepts,
    run_squawk,
)
from tests.harness.migrations import CHARHUB, write_migrations

BAD = """-- AlterTable
ALTER TABLE "UsageLog" ADD COLUMN "units" INTEGER;
-- CreateIndex
CREATE INDEX "UsageLog_processed_idx" ON "UsageLog"("processed");
-- CreateIndex
CREATE INDEX "Character_name_idx" ON "Character"("name");
-- squawk-ignore adding-not-nullable-field
ALTER TABLE "Character" ALTER COLUMN "name" SET NOT NULL;
"""
GOOD = """SET lock_timeout = '1s';
SET statement_timeout = '5s';
ALTER TABLE "UsageLog" ADD COLUMN "note" TEXT;
"""
NEW_TABLE = """CREATE TABLE "Fresh" ("id" TEXT NOT NULL, "at" TIMESTAMP(3) NOT NULL);
CREATE INDEX "Fresh_at_idx" ON "Fresh"("at");
"""


def f(rule: str, table: str | None = "UsageLog", migration: str = "2_m") -> Finding:
    return Finding(migration, rule, "Warning", 3, 1, "msg", None, table)


SIZES = {"UsageLog": TableSize(5_000_000, 2 << 30), "Character": TableSize(300, 65536)}


@pytest.mark.parametrize(("finding", "created", "accepts", "verdict"), [
    (f("require-concurrent-index-creation"), set(), [], "block"),                  # 5 M rows
    (f("require-concurrent-index-creation", "Character"), set(), [], "note"),      # 300 rows
    (f("require-concurrent-index-creation", "public.UsageLog"), set(), [], "note"),  # unknown size key: no size
    (f("require-concurrent-index-creation"), {"UsageLog"}, [], "note"),            # created by a pending one
    (f("require-concurrent-index-creation"), set(), [Accept("require-concurrent-index-creation")], "accepted"),
    (f("require-concurrent-index-creation"), set(), [Accept("require-concurrent-index-creation", "2_m")],
     "accepted"),
    (f("require-concurrent-index-creation"), set(), [Accept("require-concurrent-index-creation", "9_x")], "block"),
    (f("changing-column-type"), set(), [], "block"),
    (f("adding-foreign-key-constraint", None), set(), [], "warn"),                 # table not identified
    (f("require-lock-timeout"), set(), [], "satisfied"),
    (f("require-statement-timeout"), set(), [], "satisfied"),
    (f("prefer-bigint-over-int"), set(), [], "note"),
    (f("prefer-timestamp-tz"), set(), [], "note"),
    (f("ban-drop-column"), set(), [], "warn"),
    (f("syntax-error"), set(), [], "block"),
])
def test_policy_table(finding, created, accepts, verdict):
    (item,) = classify([finding], SIZES, {"2_m": created}, 100_000, accepts)
    assert item.verdict == verdict
    if item.table in SIZES:
        assert item.table_rows == SIZES[item.table].rows
    if verdict == "satisfied":
        assert "runner" in item.reason


@pytest.mark.parametrize(("size", "verdict", "reason"), [
    (TableSize(20_000, 40 << 30), "block", "40960.0 MiB ≥ 1024.0 MiB (setting migrate_big_table_bytes; 20000 rows)"),
    (TableSize(20_000, 64 << 20), "note", "20000 rows, 64.0 MiB: short lock"),
    (TableSize(200_000, 1 << 20), "block", "200000 rows ≥ 100000 (setting migrate_big_table_rows)"),
])
def test_big_means_many_rows_or_many_bytes(size, verdict, reason):
    (item,) = classify([f("changing-column-type", "Wide")], {"Wide": size}, {}, 100_000, [], big_bytes=1 << 30)
    assert (item.verdict, item.reason) == (verdict, reason)


def test_parse_accepts():
    assert parse_accepts(["a-rule", "b-rule:20250101_x"]) == [Accept("a-rule"), Accept("b-rule", "20250101_x")]
    with pytest.raises(ConfigError):
        parse_accepts([":x"])


def test_squawk_on_real_files(tmp_path):
    root = write_migrations(tmp_path / "m", {"1_bad": BAD, "2_good": GOOD, "3_idx": (
        'CREATE INDEX CONCURRENTLY "x" ON "UsageLog"("timestamp");\n')})
    files, _ = read_migrations(root)
    findings = run_squawk(root, files, 16)
    bad = {(x.rule, x.line, x.table) for x in findings if x.migration == "1_bad"}
    assert ("require-concurrent-index-creation", 4, "UsageLog") in bad
    assert ("require-concurrent-index-creation", 6, "Character") in bad
    assert ("prefer-bigint-over-int", 2, "UsageLog") in bad
    assert not any(rule == "adding-not-nullable-field" for rule, _, _ in bad)  # squawk-ignore honoured
    assert [x.rule for x in findings if x.migration == "2_good"] == []
    concurrent = {x.rule for x in findings if x.migration == "3_idx"}  # linted as outside a transaction
    assert "require-concurrent-index-creation" not in concurrent
    assert "ban-concurrent-index-creation-in-transaction" not in concurrent


def test_lint_with_live_sizes_big_and_small_tables(database, tmp_path):
    root = write_migrations(tmp_path / "m", CHARHUB)
    with psycopg.connect(database, autocommit=True) as conn:
        for name in sorted(CHARHUB):
            conn.execute((root / name / "migration.sql").read_text())
        conn.execute('INSERT INTO "User" VALUES (\'u\', \'u@x\')')
        conn.execute("INSERT INTO \"Character\" (id, name, \"userId\") SELECT 'c' || g, 'n', 'u' "
                     "FROM generate_series(1, 50) g")
        conn.execute("INSERT INTO \"UsageLog\" (id, \"characterId\") SELECT 'l' || g, 'c1' "
                     "FROM generate_series(1, 3000) g")
        write_migrations(root, {"4_bad": BAD, "5_new": NEW_TABLE, "6_good": GOOD})
        files, _ = read_migrations(root)
        items = lint_pending(conn, root, files, ["4_bad", "5_new", "6_good"], 16, 1000, [])
    by = {(i.migration, i.rule, i.table): i for i in items}
    big = by[("4_bad", "require-concurrent-index-creation", "UsageLog")]
    assert big.verdict == "block" and big.table_rows >= 1000 and big.table_bytes > 0 and "SHARE" in big.lock
    small = by[("4_bad", "require-concurrent-index-creation", "Character")]
    assert small.verdict == "note" and small.table_rows == 50
    assert {i.verdict for i in items if i.rule == "require-lock-timeout"} == {"satisfied"}
    assert {i.verdict for i in items if i.migration == "5_new"} <= {"note", "satisfied"}
    assert [i for i in items if i.migration == "6_good"] == []
    assert all(i.line >= 1 for i in items)
