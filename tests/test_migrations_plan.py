"""Pure parts of the migration pipeline: the plan, Prisma's checksum matching, the lock-retry schedule,
statement splitting. Table tests, no I/O."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from charhub_ops.migrations.plan import (
    Drift,
    LedgerRow,
    MigrationFile,
    accepted_checksums,
    blocking_reason,
    checksum,
    make_plan,
    plan_changes,
)
from charhub_ops.migrations.runner import lock_retry_schedule
from charhub_ops.migrations.sqltext import (
    concurrent_index,
    created_tables,
    has_concurrently,
    named_table,
    split_statements,
    transaction_segments,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
LF = b'CREATE TABLE "A" ("id" TEXT);\nCREATE INDEX "A_id" ON "A"("id");\n'


def f(name: str, data: bytes = LF) -> MigrationFile:
    return MigrationFile(name, checksum(data), accepted_checksums(data))


def row(name: str, data: bytes = LF, minute: int = 0, finished=True, rolled_back=False, check=None) -> LedgerRow:
    started = T0 + timedelta(minutes=minute)
    return LedgerRow(id=f"id-{name}-{minute}", checksum=check or checksum(data), migration_name=name,
                     started_at=started, finished_at=started if finished else None,
                     rolled_back_at=started if rolled_back else None, applied_steps_count=int(finished))


def test_checksum_is_lowercase_hex_sha256_of_the_bytes():
    assert checksum(LF) == hashlib.sha256(LF).hexdigest() and len(checksum(LF)) == 64


CRLF = LF.replace(b"\n", b"\r\n")
UNPADDED = "".join(f"{b:x}" for b in hashlib.sha256(LF).digest())


@pytest.mark.parametrize(("recorded", "file_data", "drift"), [
    (checksum(LF), LF, []),                                      # same file
    (checksum(CRLF), LF, []),                                    # applied from a Windows checkout
    (checksum(LF), CRLF, []),                                    # checked out with CRLF here
    (UNPADDED, LF, []),                                          # old Prisma rows without zero padding
    (checksum(b"other"), LF, [Drift("1_init", "changed")]),      # edited after it was applied
])
def test_drift_tolerates_line_endings_like_prisma(recorded, file_data, drift):
    plan = make_plan([f("1_init", file_data)], [row("1_init", check=recorded)])
    assert plan.drift == drift and plan.applied == ["1_init"] and plan.pending == []


@pytest.mark.parametrize(("files", "rows", "applied", "pending", "failed", "drift"), [
    # nothing applied yet: everything pending, in name order
    (["2_b", "1_a", "10_c"], [], [], ["10_c", "1_a", "2_b"], [], []),
    # re-run: all applied, nothing pending
    (["1_a", "2_b"], [row("1_a"), row("2_b", minute=1)], ["1_a", "2_b"], [], [], []),
    # a failed row blocks and is neither applied nor pending
    (["1_a", "2_b", "3_c"], [row("1_a"), row("2_b", minute=1, finished=False)], ["1_a"], ["3_c"], ["2_b"], []),
    # resolved --rolled-back: pending again
    (["1_a", "2_b"], [row("1_a"), row("2_b", minute=1, finished=False, rolled_back=True)], ["1_a"], ["2_b"],
     [], []),
    # resolved --applied: the rolled-back failure plus a finished row = applied
    (["1_a"], [row("1_a", finished=False, rolled_back=True), row("1_a", minute=2)], ["1_a"], [], [], []),
    # applied but the directory is gone
    (["2_b"], [row("1_a")], ["1_a"], ["2_b"], [], [Drift("1_a", "missing")]),
])
def test_plan_table(files, rows, applied, pending, failed, drift):
    plan = make_plan([f(n) for n in files], rows)
    assert (plan.applied, plan.pending, plan.failed, plan.drift) == (applied, pending, failed, drift)
    # invariant: every file is exactly one of applied / pending / failed
    assert sorted(set(plan.applied) & set(files) | set(plan.pending) | set(plan.failed)) == sorted(files)


def test_blocking_reasons_name_the_way_out():
    failed = make_plan([f("1_a")], [row("1_a", finished=False)])
    assert "resolve --rolled-back 1_a" in blocking_reason(failed, True)
    assert "resolve --applied 1_a" in blocking_reason(failed, True)
    drifted = make_plan([f("1_a", b"x")], [row("1_a")])
    assert "--allow-drift" in blocking_reason(drifted, False)
    assert blocking_reason(drifted, True) is None


@pytest.mark.parametrize(("final", "attempts", "expected"), [
    (5.0, 1, [(5.0, 0.0)]),
    (0.05, 3, [(0.05, 0.025), (0.05, 0.025), (0.05, 0.0)]),
    (1.6, 5, [(0.1, 0.05), (0.2, 0.1), (0.4, 0.2), (0.8, 0.4), (1.6, 0.0)]),
    (10.0, 3, [(0.1, 0.05), (1.0, 0.5), (10.0, 0.0)]),
])
def test_lock_retry_schedule(final, attempts, expected):
    assert lock_retry_schedule(final, attempts) == expected


def test_lock_retry_schedule_grows_and_pauses_stay_bounded():
    schedule = lock_retry_schedule(30.0, 12)
    timeouts = [t for t, _ in schedule]
    assert timeouts == sorted(timeouts) and timeouts[0] == 0.1 and timeouts[-1] == 30.0
    assert all(0 < p <= 3.0 for _, p in schedule[:-1]) and schedule[-1][1] == 0.0


def test_statements_skip_comments_strings_and_dollar_quotes():
    text = ("-- a; comment\nCREATE TABLE \"A;\" (x text DEFAULT 'a;b');\n/* c; */\n"
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $fn$ SELECT 1; $fn$;\nSELECT 2")
    statements = split_statements(text)
    assert [s.text.split()[0:2] for s in statements] == [["CREATE", "TABLE"], ["CREATE", "FUNCTION"], ["SELECT", "2"]]
    assert created_tables(text) == {"A;"}


@pytest.mark.parametrize(("statement", "table"), [
    ('ALTER TABLE "UsageLog" ADD COLUMN "x" INTEGER', "UsageLog"),
    ('ALTER TABLE IF EXISTS ONLY public."UsageLog" ALTER COLUMN "x" SET NOT NULL', "public.UsageLog"),
    ('CREATE UNIQUE INDEX "U_idx" ON "User"("email")', "User"),
    ('CREATE INDEX CONCURRENTLY IF NOT EXISTS "i" ON ONLY "Character" USING gin ("profile")', "Character"),
    ("CREATE INDEX ON plain_table (x)", "plain_table"),
    ('DROP TABLE IF EXISTS "Old"', "Old"),
    ("ALTER TABLE Mixed ADD c int", "mixed"),
    ('CREATE TYPE "Mood" AS ENUM (\'A\')', None),
])
def test_named_table(statement, table):
    assert named_table(statement) == table


def test_concurrently_ignores_comments():
    assert has_concurrently('CREATE INDEX CONCURRENTLY "i" ON "A"("x");')
    assert not has_concurrently('-- not CONCURRENTLY here\nCREATE INDEX "i" ON "A"("x");')


ENUM_CHANGE = """-- AlterEnum
BEGIN;
CREATE TYPE "Role_new" AS ENUM ('USER', 'ADMIN');
ALTER TYPE "Role" RENAME TO "Role_old";
COMMIT;

-- a comment; with a semicolon
ALTER TABLE "User" ADD COLUMN "x" TEXT;
"""


@pytest.mark.parametrize(("text", "segments"), [
    ('ALTER TABLE "A" ADD "x" int;\nALTER TABLE "B" ADD "y" int;\n', [(1, 2, False)]),
    (ENUM_CHANGE, [(2, 5, True), (8, 8, False)]),
    ("BEGIN;\nSELECT 1;\nCOMMIT;\n", [(1, 3, True)]),
    ("INSERT INTO t VALUES (1);\nCOMMIT;\nINSERT INTO t VALUES (2);\nROLLBACK;\nSELECT 3;", [
        (1, 2, True), (3, 4, False), (5, 5, False)]),
    ("BEGIN;\nSAVEPOINT s;\nROLLBACK TO SAVEPOINT s;\nEND;\n", [(1, 4, True)]),  # ROLLBACK TO is no end
    ("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN COMMIT; RETURN 1; END $$;\nSELECT 1;\n",
     [(1, 2, False)]),
    ("-- only a comment\n", []),
])
def test_transaction_segments_cut_after_the_files_own_commits(text, segments):
    found = transaction_segments(text)
    assert [(s.first_line, s.last_line, s.commits) for s in found] == segments
    assert "".join(s.text for s in found).strip() == text.strip().removesuffix("-- only a comment")


@pytest.mark.parametrize(("statement", "target"), [
    ('CREATE INDEX CONCURRENTLY "Character_name_idx" ON "Character"("name")', ("Character_name_idx", "Character")),
    ('-- x\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "U" ON ONLY public."User" ("e")', ("U", "public.User")),
    ('CREATE INDEX "i" ON "A"("x")', None),
    ('DROP INDEX CONCURRENTLY "i"', None),
])
def test_concurrent_index(statement, target):
    assert concurrent_index(statement) == target


def test_created_tables_if_not_exists_apart():
    text = 'CREATE TABLE "New" (id int);\nCREATE TABLE IF NOT EXISTS public."Maybe" (id int);\n'
    assert created_tables(text) == {"New"}
    assert created_tables(text, if_not_exists=True) == {"public.Maybe", "Maybe"}


@pytest.mark.parametrize(("planned", "on_disk", "pending", "changes"), [
    ({"2_a": LF}, {"1_x": LF, "2_a": LF}, ["2_a"], []),
    ({"2_a": LF}, {"1_x": LF, "2_a": LF + b"--"}, ["2_a"], ["2_a (changed)"]),
    ({"2_a": LF}, {"1_x": LF}, [], ["2_a (gone)"]),
    ({"2_a": LF}, {"2_a": LF, "3_b": LF}, ["2_a", "3_b"], ["3_b (new)"]),
    ({"2_a": LF}, {"2_a": LF}, [], ["2_a (no longer pending: applied or failed meanwhile)"]),
    ({}, {"0_early": LF}, ["0_early"], ["0_early (new)"]),
])
def test_plan_changes(planned, on_disk, pending, changes):
    files = [f(name, data) for name, data in on_disk.items()]
    assert plan_changes({n: checksum(d) for n, d in planned.items()}, files, pending) == changes
