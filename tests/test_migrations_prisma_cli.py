"""Differential test of the migration ledger against the real Prisma CLI: ``charhub-ops migrate`` applies
CharHub-shaped migrations, fails one and resolves it, and at each step ``prisma migrate status`` (Prisma 6.19.3,
WebAssembly schema engine through @prisma/adapter-pg) reads ``_prisma_migrations`` and agrees with
``charhub-ops migrate status`` on what failed and what is pending."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from charhub_ops.cli import app
from tests.harness.migrations import CHARHUB, write_migrations
from tests.harness.prisma_cli import PrismaProject, PrismaStatus, parse_status, prisma_home  # noqa: F401 - fixture

BROKEN = "20250401000000_character_rating"
HOTFIX = "20250501000000_usage_log_model"
LATER = "20250601000000_character_slug"


@pytest.fixture
def project(prisma_home, database, tmp_path, monkeypatch) -> PrismaProject:  # noqa: F811 - the fixture above
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", database)
    monkeypatch.setenv("CHARHUB_OPS_REPOSITORY", f"file://{tmp_path}/repo")
    monkeypatch.setenv("CHARHUB_OPS_MIGRATE_LOCK_WAIT", "2")
    return PrismaProject(prisma_home, tmp_path / "app")


def migrate(project: PrismaProject, *args: str):
    return CliRunner().invoke(app, ["migrate", *args, "--migrations", str(project.migrations)])


def ours(project: PrismaProject) -> dict:
    result = migrate(project, "status", "--json")
    return json.loads(result.stdout)


def agree(project: PrismaProject, database: str, *, failed: list[str], pending: list[str],
          edited: tuple[str, ...] = ()) -> PrismaStatus:
    """Both tools read the same ledger and directory: the same failed and pending names; Prisma's exit code is
    0 exactly when nothing failed or waits; Prisma's own SHA-256 of each file matches the row it compares with
    (``edited``: the names it flags, see the rolled-back step)."""
    prisma, mine = project.status(database), ours(project)
    assert (mine["failed"], mine["pending"], mine["drift"]) == (failed, pending, []), mine
    assert (prisma.failed, prisma.pending, prisma.missing) == (failed, pending, []), prisma.output
    assert prisma.returncode == (1 if failed or pending else 0), prisma.output
    assert prisma.up_to_date == (not failed and not pending), prisma.output
    assert prisma.edited == list(edited) and prisma.diagnosis["failedMigrationNames"] == failed, prisma.diagnosis
    return prisma


def test_prisma_migrate_status_agrees_with_the_ledger_at_each_step(prefect_server, project, database):
    write_migrations(project.migrations, CHARHUB)
    agree(project, database, failed=[], pending=sorted(CHARHUB))
    assert migrate(project, "--no-backup").exit_code == 0
    agree(project, database, failed=[], pending=[])

    write_migrations(project.migrations, {BROKEN: 'ALTER TABLE "Character" ADD COLUMN "rating" INT;\nSELECT 1/0;\n'})
    assert migrate(project, "--no-backup").exit_code == 1
    agree(project, database, failed=[BROKEN], pending=[])

    assert migrate(project, "resolve", "--rolled-back", BROKEN).exit_code == 0
    # Prisma's status matches rows by name and reports a rolled-back migration whose folder is still there as up
    # to date (FIELD-NOTES); its deploy — and ours — applies it again. The row is no longer failed for either.
    prisma, mine = project.status(database), ours(project)
    assert prisma.failed == [] and prisma.returncode == 0 and prisma.up_to_date, prisma.output
    assert mine["failed"] == [] and mine["pending"] == [BROKEN]
    (project.migrations / BROKEN / "migration.sql").write_text('ALTER TABLE "Character" ADD COLUMN "rating" INT;\n')
    assert migrate(project, "--no-backup").exit_code == 0
    # Prisma's diagnosis compares a file with the *first* row of its name (ORDER BY started_at): the rolled-back
    # row of the broken version, so it flags the fixed file as edited — after Prisma's own resolve + deploy too.
    agree(project, database, failed=[], pending=[], edited=(BROKEN,))

    write_migrations(project.migrations, {HOTFIX: 'ALTER TABLE "UsageLog" ADD COLUMN "model" TEXT NOT NULL;\n'
                                                  'SELECT 1/0;\n'})
    assert migrate(project, "--no-backup").exit_code == 1
    agree(project, database, failed=[HOTFIX], pending=[], edited=(BROKEN,))
    assert migrate(project, "resolve", "--applied", HOTFIX).exit_code == 0  # fixed by hand
    agree(project, database, failed=[], pending=[], edited=(BROKEN,))

    write_migrations(project.migrations, {LATER: 'ALTER TABLE "Character" ADD COLUMN "slug" TEXT;\n'})
    agree(project, database, failed=[], pending=[LATER], edited=(BROKEN,))

    edited = sorted(CHARHUB)[1]  # the checksums are compared, not ignored: an edit shows in both tools
    (project.migrations / edited / "migration.sql").write_text(CHARHUB[edited] + "-- edited\n")
    assert project.status(database).edited == [edited, BROKEN]
    assert [d["migration"] for d in ours(project)["drift"]] == [edited]


@pytest.mark.parametrize(("output", "failed", "pending"), [
    ("4 migrations found in prisma/migrations\n\nDatabase schema is up to date!\n", [], []),
    ("Following migration have failed:\n20250401000000_x\n\nDuring development if the failed migration(s) have not"
     ' been deployed\n- If you rolled back the migration(s) manually:\nprisma migrate resolve --rolled-back '
     '"20250401000000_x"\n', ["20250401000000_x"], []),
    ("Following migrations have not yet been applied:\n1_a\n2_b\n\nTo apply migrations in development run prisma"
     " migrate dev.\n", [], ["1_a", "2_b"]),
])
def test_status_output_is_parsed_by_heading(output, failed, pending):
    status = parse_status(1, output)
    assert (status.failed, status.pending, status.missing, status.diagnosis) == (failed, pending, [], None)
    debug = '  "diagnoseResult": "{\\n  \\"editedMigrationNames\\": [\\"1_a\\"]\\n}",\n'
    assert parse_status(0, output + debug).edited == ["1_a"]
