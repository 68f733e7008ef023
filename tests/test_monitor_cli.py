"""`charhub-ops health | incident | maintenance` without a Prefect server: the core pass, streaks kept in the
repository between separate invocations, one error line for a bad config; plus redaction."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from charhub_ops.cli import app
from charhub_ops.monitoring.redact import redact

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("CHARHUB_OPS_REPOSITORY", f"file://{tmp_path}/repo")
    # the repository store, whether or not another test started a Prefect server in this process
    monkeypatch.setenv("CHARHUB_OPS_MONITOR_STATE", f"file://{tmp_path}/repo")
    config = tmp_path / "monitor.yaml"
    config.write_text(yaml.safe_dump({"checks": [
        {"id": "web", "type": "http", "url": "http://127.0.0.1:9/api/v1/health", "expect_json": {"status": "ok"}},
        {"id": "root-disk", "type": "disk", "paths": [str(tmp_path)], "levels": [99.8, 99.9, 99.99]},
    ], "incident_dir": str(tmp_path / "incidents")}))
    return str(config)


def health(config: str):
    result = runner.invoke(app, ["health", "--config", config, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_health_streak_persists_between_invocations_and_goes_down_at_the_threshold(env):
    codes, streaks, states = [], [], []
    for _ in range(3):
        code, rows = health(env)
        web = next(r for r in rows if r["id"] == "web")
        codes.append(code), streaks.append(web["streak"]), states.append(web["state"])
        assert set(web) == {"id", "ok", "detail", "streak", "state"} and web["ok"] is False
    assert streaks == [1, 2, 3] and states == ["up", "up", "down"] and codes == [0, 0, 1]
    disk = next(r for r in rows if r["id"] == "root-disk")
    assert disk["ok"] and disk["state"] == "up" and disk["streak"] == 0


def test_health_in_a_separate_process_sees_the_same_streak(env, tmp_path):
    health(env)
    out = subprocess.run([sys.executable, "-m", "charhub_ops.cli", "health", "--config", env, "--json"],
                         capture_output=True, text=True, env={**_env(tmp_path)})
    web = next(r for r in json.loads(out.stdout) if r["id"] == "web")
    assert web["streak"] == 2
    assert "prefect" not in out.stderr.lower()  # no flow run, no ephemeral server: the core pass


def _env(tmp_path):
    import os

    return {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "CHARHUB_OPS_MONITOR_STATE")} | {
        "CHARHUB_OPS_REPOSITORY": f"file://{tmp_path}/repo"}  # auto: no server → the repository


def test_maintenance_window_shows_in_health_and_can_be_stopped(env):
    result = runner.invoke(app, ["maintenance", "start", "--check", "web", "--for", "30m", "--reason", "deploy",
                                 "--json"])
    assert result.exit_code == 0, result.output
    window = json.loads(result.stdout)
    for _ in range(3):
        code, rows = health(env)
    assert code == 0 and next(r for r in rows if r["id"] == "web")["state"] == "maintenance"
    listed = json.loads(runner.invoke(app, ["maintenance", "list", "--json"]).stdout)
    assert [(w["id"], w["active"]) for w in listed] == [(window["id"], True)]
    assert runner.invoke(app, ["maintenance", "stop", window["id"]]).exit_code == 0
    code, rows = health(env)
    assert code == 1 and next(r for r in rows if r["id"] == "web")["state"] == "down"


def test_bad_config_and_bad_duration_are_one_error_line(env, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks:\n  - id: Web Site\n    type: http\n    url: x\n")
    result = runner.invoke(app, ["health", "--config", str(bad)])
    assert result.exit_code == 1 and "check id 'Web Site'" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["maintenance", "start", "--check", "web", "--for", "soon"])
    assert result.exit_code == 1 and "--for" in result.output


def test_incident_list_is_empty_then_json(env):
    result = runner.invoke(app, ["incident", "list", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_core_pass_never_imports_prefect():
    code = "import sys, charhub_ops.monitoring.runner, charhub_ops.cli.health; print('prefect' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.parametrize(("text", "secret"), [
    ("connect postgresql://charhub:s3cr3t-pw@db:5432/charhub_db failed", "s3cr3t-pw"),
    ("ALTER ROLE app PASSWORD 'hunter2hunter2'", "hunter2hunter2"),
    ("Authorization: Bearer eyJhbGciOi.abc.def", "eyJhbGciOi.abc.def"),
    ("env R2_SECRET_ACCESS_KEY=abcd1234efgh", "abcd1234efgh"),
    ("dsn host=db password=pa55word dbname=x", "pa55word"),
])
def test_redact_removes_secret_shapes(text, secret):
    assert secret not in redact(text)


def test_redact_removes_known_values_anywhere():
    assert "my-token-value" not in redact("log: token is my-token-value.", ["my-token-value"])


def test_incident_respond_json_then_list_and_show(env, prefect_server, tmp_path):
    config = tmp_path / "disk.yaml"
    config.write_text(yaml.safe_dump({"checks": [{"id": "full-disk", "type": "disk", "paths": [str(tmp_path)],
                                                  "levels": [0, 0.001, 0.002], "mitigations": ["docker_cleanup"]}],
                                      "incident_dir": str(tmp_path / "incidents")}))
    result = runner.invoke(app, ["incident", "respond", "--config", str(config), "--check", "full-disk", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"incident_id", "actions", "report", "resolved"} <= set(out) and out["resolved"] is False
    assert out["actions"] == [{"action": "docker_cleanup", "ok": False, "ran": False}]  # no cleanup deployment
    listed = json.loads(runner.invoke(app, ["incident", "list", "--json"]).stdout)
    assert [i["incident_id"] for i in listed] == [out["incident_id"]] and listed[0]["status"] == "escalated"
    shown = runner.invoke(app, ["incident", "show", out["incident_id"]])
    assert shown.exit_code == 0 and "## Timeline" in shown.stdout and "**Status**: Escalated" in shown.stdout
    assert runner.invoke(app, ["incident", "show", "nope"]).exit_code == 1
