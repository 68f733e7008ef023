"""`charhub-ops migrate` end to end: the Prefect flow on the test server, real PostgreSQL, a local
repository for the backup, a local HTTP server for the health check."""

from __future__ import annotations

import http.server
import json
import threading

import psycopg
import pytest
from typer.testing import CliRunner

from charhub_ops.cli import app
from charhub_ops.errors import DatabaseError
from charhub_ops.migrations.ledger import read_history
from tests.harness.migrations import CHARHUB, write_migrations
from tests.test_backup_flow import _wait_for_event
from tests.test_cli import run_cli

BIG_INDEX = '-- CreateIndex\nCREATE INDEX "UsageLog_processed_idx" ON "UsageLog"("processed");\n'


@pytest.fixture
def env(database, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", database)
    monkeypatch.setenv("CHARHUB_OPS_REPOSITORY", f"file://{tmp_path}/repo")
    monkeypatch.setenv("CHARHUB_OPS_MIGRATE_LOCK_WAIT", "2")
    return database


def cli(*args: str):
    return CliRunner().invoke(app, ["migrate", *args])


def errors(result) -> list[str]:  # a CliRunner result or a CompletedProcess
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _latest_artifact(api: str, key: str) -> str:
    import httpx

    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1}
    (artifact,) = httpx.post(f"{api}/artifacts/filter", json=body, timeout=10).raise_for_status().json()
    return artifact["data"]


@pytest.fixture
def health_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/api/v1/health"
            self.send_response(200 if ok else 503)
            self.end_headers()
            self.wfile.write(b'{"status":"ok"}' if ok else b"down")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_dry_run_then_apply_then_noop(prefect_server, env, tmp_path, monkeypatch, health_server):
    root = write_migrations(tmp_path / "migrations", CHARHUB)
    monkeypatch.setenv("CHARHUB_OPS_MIGRATE_HEALTH_URLS", f"{health_server}/api/v1/health")
    dry = cli("--migrations", str(root), "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    preview = json.loads(dry.stdout)
    assert preview["outcome"] == "dry-run" and preview["pending"] == sorted(CHARHUB) and preview["applied"] == []
    assert {"migration", "rule", "level", "line", "message", "table", "table_rows"} <= set(preview["lint"][0])
    assert preview["backup_id"] is None
    markdown = _latest_artifact(prefect_server, "migration-preview")
    assert "20250301000000_character_tagline" in markdown and "## Lint (squawk + live table sizes)" in markdown
    with psycopg.connect(env) as conn:  # a dry run changes nothing
        assert conn.execute("SELECT to_regclass('_prisma_migrations'), to_regclass('charhub_ops.migration_runs')"
                            ).fetchone() == (None, None)

    run = cli("--migrations", str(root), "--json")
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    assert report["outcome"] == "applied" and report["applied"] == sorted(CHARHUB) and report["pending"] == []
    assert report["backup_id"] and (tmp_path / "repo").is_dir()
    assert [c["ok"] for c in report["checks"]] == [True]
    with psycopg.connect(env) as conn:
        (history,) = read_history(conn)
    assert history["outcome"] == "applied" and history["backup_id"] == report["backup_id"]
    assert history["applied"] == sorted(CHARHUB) and history["operator"] and history["duration_seconds"] >= 0
    assert history["plan"]["planned"] == sorted(CHARHUB) and history["no_backup"] is False
    event = _wait_for_event(prefect_server, "charhub.migration.applied", f"charhub.database.{report['database']}")
    assert event["payload"]["applied"] == sorted(CHARHUB) and event["payload"]["backup_id"] == report["backup_id"]

    status = cli("status", "--migrations", str(root), "--json")
    assert status.exit_code == 0 and json.loads(status.stdout)["applied"] == sorted(CHARHUB)
    again = cli("--migrations", str(root), "--no-backup", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["outcome"] == "up-to-date"


def test_failure_records_notifies_and_blocks_until_resolve(prefect_server, env, tmp_path):
    root = write_migrations(tmp_path / "m", {"1_init": CHARHUB["20250101000000_init"],
                                             "2_bad": 'ALTER TABLE "Character" ADD COLUMN "x" "NoSuchType";\n'})
    failed = run_cli("migrate", "--migrations", str(root), "--no-backup", "--json",
                     env={"PREFECT_API_URL": prefect_server})  # a real process: exit code, no traceback
    assert failed.returncode == 1 and "Traceback" not in failed.stdout + failed.stderr
    (line,) = errors(failed)
    assert "2_bad failed" in line and "NoSuchType" in line
    summary = json.loads(failed.stdout)
    assert summary["applied"] == ["1_init"] and summary["failed"] == ["2_bad"] and summary["outcome"] == "failed"
    with psycopg.connect(env) as conn:
        (history,) = read_history(conn)
    assert history["outcome"] == "failed" and history["no_backup"] is True and "NoSuchType" in history["error"]
    event = _wait_for_event(prefect_server, "charhub.migration.failed", f"charhub.database.{summary['database']}")
    assert event["payload"]["failed"] == ["2_bad"]

    status = cli("status", "--migrations", str(root), "--json")
    assert status.exit_code == 1 and json.loads(status.stdout)["failed"] == ["2_bad"]
    blocked = cli("--migrations", str(root), "--no-backup")
    assert blocked.exit_code == 1 and "resolve --rolled-back 2_bad" in errors(blocked)[0]

    (root / "2_bad" / "migration.sql").write_text('ALTER TABLE "Character" ADD COLUMN "x" TEXT;\n')
    resolved = cli("resolve", "--migrations", str(root), "--rolled-back", "2_bad")
    assert resolved.exit_code == 0, resolved.output
    fixed = cli("--migrations", str(root), "--no-backup", "--json")
    assert fixed.exit_code == 0 and json.loads(fixed.stdout)["applied"] == ["2_bad"]


def test_lint_blocks_a_big_table_until_accepted(prefect_server, env, tmp_path, monkeypatch):
    root = write_migrations(tmp_path / "m", CHARHUB)
    assert cli("--migrations", str(root), "--no-backup").exit_code == 0
    with psycopg.connect(env, autocommit=True) as conn:
        conn.execute("INSERT INTO \"UsageLog\" (id, \"characterId\") "
                     "SELECT 'l' || g, 'c' FROM generate_series(1, 500) g")
    monkeypatch.setenv("CHARHUB_OPS_MIGRATE_BIG_TABLE_ROWS", "100")
    write_migrations(root, {"20250401000000_processed_idx": BIG_INDEX})
    blocked = cli("--migrations", str(root), "--no-backup", "--dry-run", "--json")
    assert blocked.exit_code == 1
    (line,) = errors(blocked)
    assert "require-concurrent-index-creation" in line and "UsageLog" in line and "--accept" in line
    item = next(i for i in json.loads(blocked.stdout)["lint"] if i["verdict"] == "block")
    assert item["table"] == "UsageLog" and item["table_rows"] >= 100
    wrong = cli("--migrations", str(root), "--no-backup", "--accept", "require-concurrent-index-creation:other")
    assert wrong.exit_code == 1
    accepted = cli("--migrations", str(root), "--no-backup", "--json",
                   "--accept", "require-concurrent-index-creation:20250401000000_processed_idx")
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.stdout)["applied"] == ["20250401000000_processed_idx"]
    with psycopg.connect(env) as conn:
        history = read_history(conn)[-1]
    assert history["accepted"] == ["require-concurrent-index-creation:20250401000000_processed_idx"]


def test_unhealthy_after_migrating_fails_the_run(prefect_server, env, tmp_path, monkeypatch, health_server):
    root = write_migrations(tmp_path / "m", {"1_init": CHARHUB["20250101000000_init"]})
    monkeypatch.setenv("CHARHUB_OPS_MIGRATE_HEALTH_URLS", f"{health_server}/down")
    monkeypatch.setenv("CHARHUB_OPS_MIGRATE_HEALTH_TIMEOUT", "1")
    result = cli("--migrations", str(root), "--no-backup", "--json")
    assert result.exit_code == 1
    assert "health checks failed" in errors(result)[0] and "HTTP 503" in errors(result)[0]
    assert json.loads(result.stdout)["outcome"] == "unhealthy"


@pytest.mark.parametrize(("args", "needle"), [
    (["--dry-run"], "--migrations: required"),
    (["--migrations", "/nonexistent"], "is not a directory"),
    (["--migrations", ".", "--accept", ":x"], "--accept"),
    (["resolve", "--migrations", "."], "exactly one of --applied NAME or --rolled-back NAME"),
])
def test_bad_input_is_one_clear_error(env, args, needle):
    result = cli(*args)
    assert result.exit_code == 1 and needle in errors(result)[0], result.output


def test_restore_on_failure_puts_the_pre_migration_database_back(prefect_server, env, pg, tmp_path):
    root = write_migrations(tmp_path / "m", {"1_init": CHARHUB["20250101000000_init"]})
    assert cli("--migrations", str(root), "--no-backup").exit_code == 0
    with psycopg.connect(env, autocommit=True) as conn:
        conn.execute("INSERT INTO \"User\" VALUES ('u1', 'a@example.com')")
    write_migrations(root, {"2_ok": 'CREATE TABLE "Ok" ("id" TEXT);\n', "3_bad": "SELECT 1/0;\n"})
    result = cli("--migrations", str(root), "--restore-on-failure", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["applied"] == ["2_ok"] and summary["failed"] == ["3_bad"]
    assert summary["restored"] == summary["backup_id"] and summary["outcome"] == "failed, restored"
    with psycopg.connect(env) as conn:  # the live name holds the pre-migration copy again
        assert conn.execute("SELECT to_regclass('\"Ok\"')").fetchone() == (None,)
        assert conn.execute('SELECT email FROM "User"').fetchall() == [("a@example.com",)]
        names = conn.execute("SELECT migration_name FROM _prisma_migrations").fetchall()
        (history,) = [h for h in read_history(conn) if str(h["run_id"]) == summary["run_id"]]
    assert names == [("1_init",)] and history["outcome"] == "failed, restored"
    with psycopg.connect(pg.url(summary["previous_database"])) as conn:  # the failed database is kept
        assert conn.execute("SELECT to_regclass('\"Ok\"') IS NOT NULL").fetchone() == (True,)


def test_drift_stops_the_run_unless_allowed_and_recorded(prefect_server, env, tmp_path):
    root = write_migrations(tmp_path / "m", {"1_init": CHARHUB["20250101000000_init"]})
    assert cli("--migrations", str(root), "--no-backup").exit_code == 0
    (root / "1_init" / "migration.sql").write_text(CHARHUB["20250101000000_init"] + "-- edited later\n")
    write_migrations(root, {"2_next": 'CREATE TABLE "Next" ("id" TEXT);\n'})
    drifted = cli("--migrations", str(root), "--no-backup", "--json")
    assert drifted.exit_code == 1 and "1_init (changed)" in errors(drifted)[0]
    assert json.loads(drifted.stdout)["drift"] == [{"migration": "1_init", "reason": "changed"}]
    allowed = cli("--migrations", str(root), "--no-backup", "--allow-drift", "--json")
    assert allowed.exit_code == 0 and json.loads(allowed.stdout)["applied"] == ["2_next"]
    with psycopg.connect(env) as conn:
        history = read_history(conn)[-1]
    assert history["allow_drift"] is True and history["plan"]["drift"] == [{"migration": "1_init", "reason": "changed"}]


def test_a_directory_changed_after_the_preview_stops_the_run(prefect_server, env, tmp_path, monkeypatch):
    import flows.migrate

    root = write_migrations(tmp_path / "m", {"1_init": CHARHUB["20250101000000_init"]})
    preview = flows.migrate.migration_report

    def edit_after_preview(summary):  # the operator reads the preview; meanwhile the directory changes
        markdown = preview(summary)
        if summary["kind"] == "preview":
            (root / "1_init" / "migration.sql").write_text('CREATE TABLE "Unlinted" ("id" TEXT);\n')
            write_migrations(root, {"2_late": 'DROP TABLE IF EXISTS "User";\n'})
        return markdown

    monkeypatch.setattr(flows.migrate, "migration_report", edit_after_preview)
    result = cli("--migrations", str(root), "--no-backup", "--json")
    assert result.exit_code == 1, result.output
    (line,) = errors(result)
    assert "changed after the plan was linted and previewed" in line and "1_init (changed)" in line
    assert "2_late (new)" in line and "Nothing was applied" in line
    with psycopg.connect(env) as conn:
        assert conn.execute("SELECT to_regclass('\"Unlinted\"'), to_regclass('\"User\"'), "
                            "to_regclass('_prisma_migrations')").fetchone() == (None, None, None)


def test_lint_sizes_tables_by_bytes_too_and_if_not_exists_keeps_the_real_size(prefect_server, env, tmp_path,
                                                                                 monkeypatch):
    root = write_migrations(tmp_path / "m", CHARHUB)
    assert cli("--migrations", str(root), "--no-backup").exit_code == 0
    with psycopg.connect(env, autocommit=True) as conn:  # few rows, many bytes (TOAST): 200 rows, ~3 MiB
        conn.execute('ALTER TABLE "UsageLog" ADD COLUMN "payload" TEXT')
        conn.execute("INSERT INTO \"UsageLog\" (id, \"characterId\", payload) SELECT 'l' || g, 'c', "
                     "(SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 500) i) "
                     "FROM generate_series(1, 200) g")
        conn.execute('ANALYZE "UsageLog"')
    monkeypatch.setenv("CHARHUB_OPS_MIGRATE_BIG_TABLE_ROWS", "100000")
    monkeypatch.setenv("CHARHUB_OPS_MIGRATE_BIG_TABLE_BYTES", str(1 << 20))
    write_migrations(root, {"20250401000000_idx": BIG_INDEX,  # the table exists: not new, not empty
                            "20250402000000_again": 'CREATE TABLE IF NOT EXISTS "UsageLog" ("id" TEXT NOT NULL);\n',
                            "20250403000000_idx": 'CREATE INDEX "UsageLog_c_idx" ON "UsageLog"("characterId");\n'})
    blocked = cli("--migrations", str(root), "--no-backup", "--dry-run", "--json")
    assert blocked.exit_code == 1, blocked.output
    items = [i for i in json.loads(blocked.stdout)["lint"] if i["rule"] == "require-concurrent-index-creation"]
    assert {i["migration"]: i["verdict"] for i in items} == {"20250401000000_idx": "block",
                                                             "20250403000000_idx": "block"}
    assert all(i["table_rows"] < 100000 and i["table_bytes"] >= 1 << 20 for i in items)
    assert "migrate_big_table_bytes" in items[0]["reason"]


def test_restore_on_failure_needs_yes_in_production(env, tmp_path, monkeypatch):
    root = write_migrations(tmp_path / "m", {"1_init": CHARHUB["20250101000000_init"]})
    monkeypatch.setenv("CHARHUB_OPS_PRODUCTION", "1")
    for option in ("--restore-on-failure", "--restore-on-health-failure"):
        result = cli("--migrations", str(root), option)
        assert result.exit_code == 1, result.output
        assert f"{option} on a production target (CHARHUB_OPS_PRODUCTION) needs --yes" in errors(result)[0]
    with psycopg.connect(env) as conn:  # refused before anything ran
        assert conn.execute("SELECT to_regclass('_prisma_migrations')").fetchone() == (None,)


def test_a_health_failure_alone_swaps_only_when_asked_by_name(prefect_server, env, tmp_path, monkeypatch,
                                                              health_server):
    root = write_migrations(tmp_path / "m", {"1_init": CHARHUB["20250101000000_init"]})
    monkeypatch.setenv("CHARHUB_OPS_MIGRATE_HEALTH_URLS", f"{health_server}/down")
    monkeypatch.setenv("CHARHUB_OPS_MIGRATE_HEALTH_TIMEOUT", "1")
    kept = cli("--migrations", str(root), "--restore-on-failure", "--json")
    assert kept.exit_code == 1
    summary = json.loads(kept.stdout)
    assert summary["outcome"] == "unhealthy" and summary["restored"] is None, summary["outcome"]
    with psycopg.connect(env) as conn:  # the migrated database stays live
        assert conn.execute("SELECT to_regclass('\"User\"') IS NOT NULL").fetchone() == (True,)
    write_migrations(root, {"2_next": 'CREATE TABLE "Next" ("id" TEXT);\n'})
    swapped = cli("--migrations", str(root), "--restore-on-health-failure", "--json")
    assert swapped.exit_code == 1
    summary = json.loads(swapped.stdout)
    assert summary["outcome"] == "unhealthy, restored" and summary["restored"] == summary["backup_id"]
    with psycopg.connect(env) as conn:
        assert conn.execute("SELECT to_regclass('\"Next\"')").fetchone() == (None,)


def test_a_deployment_run_pauses_for_approval_before_restoring_in_production(prefect_server, env, tmp_path,
                                                                               monkeypatch):
    import uuid

    from prefect.context import _deployment_id

    import flows.approval
    from flows.migrate import migrate_flow

    root = write_migrations(tmp_path / "m", {"1_bad": "CREATE TABLE \"Half\" (\"id\" TEXT);\nSELECT 1/0;\n"})
    monkeypatch.setenv("CHARHUB_OPS_PRODUCTION", "1")
    asked = []

    def pause(wait_for_input, timeout, poll_interval):  # the approval form, refused by the operator
        asked.append(wait_for_input)
        return flows.approval.Approval(approve=False, reason="not now")

    monkeypatch.setattr(flows.approval, "pause_flow_run", pause)
    token = _deployment_id.set(uuid.uuid4())  # as in a run started from a deployment
    try:
        with pytest.raises(DatabaseError) as info:
            migrate_flow(migrations_dir=str(root), dry_run=False, restore_on_failure=True)
    finally:
        _deployment_id.reset(token)
    summary = info.value.details
    assert len(asked) == 1 and summary["restored"] is None and summary["outcome"] == "failed"
    assert "restore not approved: not now" in summary["error"]


def test_prisma_schema_in_the_url_places_the_ledger_and_the_tables(prefect_server, env, tmp_path, monkeypatch):
    root = write_migrations(tmp_path / "m", CHARHUB)
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", env + ("&" if "?" in env else "?") + "schema=tenant")
    applied = cli("--migrations", str(root), "--no-backup", "--json")
    assert applied.exit_code == 0, applied.output
    status = cli("status", "--migrations", str(root), "--json")
    assert status.exit_code == 0 and json.loads(status.stdout)["applied"] == sorted(CHARHUB)
    with psycopg.connect(env) as conn:
        assert conn.execute("SELECT to_regclass('tenant._prisma_migrations') IS NOT NULL, "
                            "to_regclass('tenant.\"UsageLog\"') IS NOT NULL, to_regclass('public._prisma_migrations'), "
                            "to_regclass('public.\"UsageLog\"')").fetchone() == (True, True, None, None)
