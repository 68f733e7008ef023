"""`charhub-ops setup` and `charhub-ops status --json` against a real Prefect server."""

from __future__ import annotations

import json

from prefect.client.orchestration import get_client
from prefect.states import Completed, Running
from typer.testing import CliRunner

from charhub_ops.cli import app
from deployments.serve import load_spec
from tests.harness.webhook import notification_hook

NAMES = [d["name"] for d in load_spec()["deployments"]]


def test_setup_is_idempotent_and_warns_about_missing_secrets(prefect_server, monkeypatch):
    runner, env = CliRunner(), {"PREFECT_API_URL": prefect_server}
    with notification_hook(monkeypatch, "ops-setup-alerts"):
        first = runner.invoke(app, ["setup", "--json"], env=env)
        assert first.exit_code == 0, first.output
        second = json.loads(runner.invoke(app, ["setup", "--json"], env=env).stdout)
    assert sorted(second["deployments"]) == sorted(NAMES) and second["work_pool"] == "charhub-ops"
    assert second["deployments"] == json.loads(first.stdout)["deployments"]  # updated in place, same ids
    assert len(second["automations"]) == 5 and set(second["automations"].values()) == {"unchanged"}
    (secret,) = [w for w in second["warnings"] if "charhub-ops-scratch-url" in w]
    assert "verify-after-backup" in secret and "Prefect UI" in secret
    with get_client(sync_client=True) as client:
        assert client.read_work_pool("charhub-ops").type == "process"


def test_setup_without_a_notification_block_is_a_warning(prefect_server, monkeypatch):
    monkeypatch.delenv("CHARHUB_OPS_NOTIFY_BLOCK", raising=False)
    result = CliRunner().invoke(app, ["setup", "--json"], env={"PREFECT_API_URL": prefect_server})
    assert result.exit_code == 0, result.output
    assert any("CHARHUB_OPS_NOTIFY_BLOCK" in w for w in json.loads(result.stdout)["warnings"])


def test_status_lists_the_last_run_of_every_deployment(prefect_server, monkeypatch):
    monkeypatch.delenv("CHARHUB_OPS_NOTIFY_BLOCK", raising=False)
    runner, env = CliRunner(), {"PREFECT_API_URL": prefect_server}
    assert runner.invoke(app, ["setup", "--json"], env=env).exit_code == 0
    with get_client(sync_client=True) as client:
        (migrate,) = [d for d in client.read_deployments() if d.name == "migrate"]
        run = client.create_flow_run_from_deployment(migrate.id)
        client.set_flow_run_state(run.id, Running(), force=True)
        client.set_flow_run_state(run.id, Completed(), force=True)
    result = runner.invoke(app, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    rows = {r["deployment"]: r for r in json.loads(result.stdout)}
    assert sorted(rows) == sorted(NAMES)
    assert set(rows["migrate"]) == {"deployment", "last_state", "last_start", "duration_s", "next_run"}
    assert rows["migrate"]["last_state"] == "Completed" and rows["migrate"]["last_start"] is not None
    assert rows["migrate"]["duration_s"] >= 0 and rows["migrate"]["next_run"] is None  # manual only
    assert rows["restore"]["last_state"] is None
    table = runner.invoke(app, ["status"], env=env)
    assert table.exit_code == 0 and any(line.split()[:2] == ["migrate", "Completed"]
                                        for line in table.stdout.splitlines()), table.output

