"""CLI: `retention plan` (stdin JSON → plan, no Prefect) and `backups prune` on a local repository."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from charhub_ops.backup.manifest import MANIFEST, backup_prefix
from charhub_ops.cli import app
from charhub_ops.storage import LocalStorage

runner = CliRunner()
RECORDS = [
    {"id": "mon", "time": "2026-03-02T03:00:00Z"},
    {"id": "sun-late", "time": "2026-03-01T23:00:00Z"},
    {"id": "sun", "time": "2026-03-01T03:00:00Z"},
    {"id": "sat", "time": "2026-02-28T03:00:00+01:00"},
]
NO_DEFAULTS = ["--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("LAST", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY", "WITHIN"):
        monkeypatch.delenv(f"CHARHUB_OPS_KEEP_{name}", raising=False)
    monkeypatch.delenv("CHARHUB_OPS_MIN_KEEP", raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def plan(*args: str, records: object = RECORDS):
    stdin = records if isinstance(records, str) else json.dumps(records)
    return runner.invoke(app, ["retention", "plan", *args], input=stdin)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["--keep-daily", "2", "--min-keep", "0", "--json"],  # the settings' weekly/monthly do not fill in
            {"policy": {"keep_daily": 2, "min_keep": 0},
             "keep": [{"id": "mon", "reasons": ["daily"]}, {"id": "sun-late", "reasons": ["daily"]}],
             "remove": ["sun", "sat"]},
            id="daily",
        ),
        pytest.param(
            [*NO_DEFAULTS, "--keep-daily", "2", "--min-keep", "0", "--json"],  # zeros given still work
            {"policy": {"keep_daily": 2, "keep_weekly": 0, "keep_monthly": 0, "min_keep": 0},
             "keep": [{"id": "mon", "reasons": ["daily"]}, {"id": "sun-late", "reasons": ["daily"]}],
             "remove": ["sun", "sat"]},
            id="daily-with-explicit-zeros",
        ),
        pytest.param(
            ["--keep-daily", "-1", "--min-keep", "0", "--json"],
            {"policy": {"keep_daily": -1, "min_keep": 0},
             "keep": [{"id": "mon", "reasons": ["daily"]}, {"id": "sun-late", "reasons": ["daily"]},
                      {"id": "sat", "reasons": ["daily"]}],
             "remove": ["sun"]},
            id="unlimited-daily-accepts-minus-one",
        ),
        pytest.param(
            ["--keep-last", "1", "--json"],
            {"policy": {"keep_last": 1, "min_keep": 3},
             "keep": [{"id": "mon", "reasons": ["last"]}, {"id": "sun-late", "reasons": ["min_keep"]},
                      {"id": "sun", "reasons": ["min_keep"]}],
             "remove": ["sat"]},
            id="min-keep-default-3",
        ),
        pytest.param(
            ["--min-keep", "0", "--json"],  # no --keep-*: the settings' rules, with the option's min_keep
            {"policy": {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6, "min_keep": 0},
             "keep": [{"id": "mon", "reasons": ["daily", "weekly", "monthly"]},
                      {"id": "sun-late", "reasons": ["daily", "weekly"]},
                      {"id": "sat", "reasons": ["daily", "oldest (weekly)", "monthly"]}],
             "remove": ["sun"]},
            id="min-keep-alone-keeps-settings-rules",
        ),
        pytest.param(
            ["--json"],  # settings defaults: 7 daily, 4 weekly, 6 monthly
            {"policy": {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6, "min_keep": 3},
             "keep": [{"id": "mon", "reasons": ["daily", "weekly", "monthly"]},
                      {"id": "sun-late", "reasons": ["daily", "weekly"]},  # ISO week 9, March
                      {"id": "sat", "reasons": ["daily", "oldest (weekly)", "monthly"]}],  # week 9, February
             "remove": ["sun"]},
            id="settings-defaults-and-oldest-rule",
        ),
    ],
)
def test_retention_plan_json(args: list[str], expected: dict) -> None:
    result = plan(*args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == expected


def test_retention_plan_reads_policy_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("CHARHUB_OPS_KEEP_DAILY", "1")
    monkeypatch.setenv("CHARHUB_OPS_KEEP_WEEKLY", "0")
    monkeypatch.setenv("CHARHUB_OPS_KEEP_MONTHLY", "0")
    monkeypatch.setenv("CHARHUB_OPS_MIN_KEEP", "0")
    result = plan("--json")
    assert json.loads(result.stdout) == {"policy": {"keep_daily": 1, "keep_weekly": 0, "keep_monthly": 0,
                                                    "min_keep": 0},
                                         "keep": [{"id": "mon", "reasons": ["daily"]}],
                                         "remove": ["sun-late", "sun", "sat"]}
    result = plan("--keep-last", "2", "--json")  # any --keep-* replaces the settings' rules, min_keep stays
    assert json.loads(result.stdout)["policy"] == {"keep_last": 2, "min_keep": 0}


def test_keep_last_one_keeps_one_of_twenty() -> None:
    """The issue's case: `--keep-last 1` kept 10 of 20 daily backups (settings' daily/weekly/monthly filled in)."""
    newest = datetime(2026, 3, 20, 3, 0, tzinfo=UTC)
    records = [{"id": f"b{d:02d}", "time": (newest - timedelta(days=d)).isoformat()} for d in range(20)]
    out = json.loads(plan("--keep-last", "1", "--min-keep", "0", "--json", records=records).stdout)
    assert out["keep"] == [{"id": "b00", "reasons": ["last"]}] and len(out["remove"]) == 19
    out = json.loads(plan("--keep-last", "1", "--json", records=records).stdout)  # min_keep 3 still holds
    assert [k["reasons"] for k in out["keep"]] == [["last"], ["min_keep"], ["min_keep"]]


def test_retention_plan_table() -> None:
    result = plan("--keep-last", "2", "--min-keep", "0")
    assert result.exit_code == 0, result.output
    assert "policy (the --keep-* options given): keep-last 2; min-keep 0" in result.stdout
    lines = [line for line in result.stdout.splitlines() if any(r["id"] in line for r in RECORDS)]
    assert [line.split("│")[1:4] for line in lines] == [
        [" mon       ", " 2026-03-02T03:00:00Z ", " keep   "],
        [" sun-late  ", " 2026-03-01T23:00:00Z ", " keep   "],
        [" sun       ", " 2026-03-01T03:00:00Z ", " remove "],
        [" sat       ", " 2026-02-28T02:00:00Z ", " remove "],
    ]


@pytest.mark.parametrize(
    ("args", "records", "message"),
    [
        (["--keep-daily", "-2"], RECORDS, "retention policy: keep_daily: must be -1 (unlimited), 0 (off) or a "
                                          "positive count, got -2"),
        (["--keep-within", "7x"], RECORDS, "retention policy: keep_within: cannot parse duration '7x'"),
        (["--min-keep", "-1"], RECORDS, "retention policy: min_keep: "),
        ([], "[{", "stdin: not valid JSON (Expecting property name enclosed in double quotes at line 1 column 3)"),
        ([], "", "stdin: not valid JSON (Expecting value at line 1 column 1)"),
        ([], {"id": "a"}, "records: expected a list of objects, got dict"),
        ([], [{"id": "a", "time": "yesterday"}], "records[0] (a): cannot parse time 'yesterday' as ISO-8601"),
    ],
)
def test_retention_plan_bad_input_is_one_line(args: list[str], records: object, message: str) -> None:
    result = plan(*args, records=records)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: " + message)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_bad_setting_is_one_line(monkeypatch) -> None:
    monkeypatch.setenv("CHARHUB_OPS_KEEP_WEEKLY", "-4")
    result = plan("--json")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid settings: keep_weekly (CHARHUB_OPS_KEEP_WEEKLY): ")


# --- backups prune (runs the Prefect flow) -------------------------------------------------------


def bid(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%SZ") + "-abcd"


@pytest.fixture
def local_repo(tmp_path) -> tuple[str, list[str]]:
    """A file:// repository with five daily backups of `charhub_db`; returns (url, ids newest first)."""
    storage = LocalStorage(tmp_path / "repo")
    newest = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)
    ids = [bid(newest - timedelta(days=d)) for d in range(5)]
    for backup_id in ids:
        for name in ("dump.pgc.zst", "globals.sql.zst", MANIFEST):
            storage.put_bytes(backup_prefix("charhub_db", backup_id) + name, b"x")
    return storage.url, ids


def backups_left(url: str) -> list[str]:
    storage = LocalStorage(url.removeprefix("file://"))
    return sorted({o.key.split("/")[1] for o in storage.list()}, reverse=True)


def test_backups_prune_dry_run_json(prefect_server, local_repo) -> None:
    url, ids = local_repo
    result = runner.invoke(app, ["backups", "prune", "--from", url, "--keep-last", "2", "--min-keep", "0",
                                 "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["dry_run"] is True and out["repository"] == url
    assert out["policy"] == {"keep_last": 2, "min_keep": 0}
    (db,) = out["databases"]
    assert db["database"] == "charhub_db"
    assert [(k["id"], k["reasons"]) for k in db["keep"]] == [(ids[0], ["last"]), (ids[1], ["last"])]
    assert db["remove"] == ids[2:]
    assert out["removed"] == [] and out["refused"] == {} and out["warnings"] == []
    assert backups_left(url) == ids
    assert latest_preview_description().endswith("policy (from options): keep-last 2; min-keep 0")


def latest_preview_description() -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["prune-preview"])), sort=ArtifactSort.CREATED_DESC, limit=1)
    return artifact.description


def test_backups_prune_without_keep_options_uses_the_settings(prefect_server, local_repo) -> None:
    url, ids = local_repo
    result = runner.invoke(app, ["backups", "prune", "--from", url, "--min-keep", "1", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert ("policy (settings, no --keep-* option given): keep-daily 7, keep-weekly 4, keep-monthly 6; "
            "min-keep 1") in result.stderr
    assert "would remove 0 backups" in result.stderr
    assert latest_preview_description().endswith(
        "policy (from settings): keep-daily 7, keep-weekly 4, keep-monthly 6; min-keep 1")


def test_backups_prune_deletes_and_prints_a_table(prefect_server, local_repo) -> None:
    url, ids = local_repo
    result = runner.invoke(app, ["backups", "prune", "--from", url, "--keep-within", "2d"])
    assert result.exit_code == 0, result.output
    assert "policy (the --keep-* options given): keep-within 2d; min-keep 3" in result.stderr
    assert backups_left(url) == ids[:3]  # within 2 days of the newest: two, + min_keep 3
    rows = [line for line in result.stdout.splitlines() if "charhub_db" in line]
    assert [row.split("│")[3].strip() for row in rows] == ["keep", "keep", "keep", "removed", "removed"]
    assert "removed 2 backups" in result.stderr


def test_backups_prune_bad_option_fails_before_prefect(tmp_path) -> None:
    result = runner.invoke(app, ["backups", "prune", "--from", f"file://{tmp_path}", "--keep-hourly", "-7"])
    assert result.exit_code == 1
    assert result.stderr == "error: retention policy: keep_hourly: must be -1 (unlimited), 0 (off) or a " \
                            "positive count, got -7\n"
