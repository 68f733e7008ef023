"""`charhub-ops setup` and `charhub-ops status --json` against a real Prefect server."""

from __future__ import annotations

import json
import uuid

from prefect.blocks.system import Secret
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
    assert len(second["automations"]) == 6 and set(second["automations"].values()) == {"unchanged"}
    (secret,) = [w for w in second["warnings"] if "'charhub-ops-scratch-url'" in w]
    assert "verify-after-backup" in secret and "CHARHUB_OPS_SCRATCH_URL" in secret and "getpass" in secret
    assert second["blocks"]["secret/charhub-ops-scratch-url"] == "missing"
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



def test_setup_creates_the_blocks_named_in_settings_from_the_environment_once(prefect_server, monkeypatch,
                                                                               tmp_path):
    """Values only from the environment; created once, then "exists"; an existing block is never overwritten;
    no value appears in the output."""
    tag = uuid.uuid4().hex[:8]
    names = {"database_url_block": f"db-{tag}", "scratch_url_block": f"scratch-{tag}",
             "age_identity_block": f"age-{tag}"}
    for setting, name in names.items():
        monkeypatch.setenv(f"CHARHUB_OPS_{setting.upper()}", name)
    identity = tmp_path / "age.key"
    identity.write_text(f"AGE-SECRET-KEY-1{tag.upper()}\n")
    values = {"db": f"postgresql://ops:pw-{tag}@db.internal/charhub", "scratch": f"postgresql://s:sc-{tag}@scratch/x"}
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", values["db"])
    monkeypatch.setenv("CHARHUB_OPS_SCRATCH_URL", values["scratch"])
    monkeypatch.setenv("CHARHUB_OPS_AGE_IDENTITY_FILE", str(identity))
    monkeypatch.delenv("CHARHUB_OPS_NOTIFY_BLOCK", raising=False)
    Secret(value="kept").save(names["age_identity_block"])  # already there: setup must not touch it
    runner, env = CliRunner(), {"PREFECT_API_URL": prefect_server}

    first = runner.invoke(app, ["setup", "--json"], env=env)
    assert first.exit_code == 0, first.output
    outcome = json.loads(first.stdout)["blocks"]
    assert {k: outcome[f"secret/{v}"] for k, v in names.items()} == {
        "database_url_block": "created", "scratch_url_block": "created", "age_identity_block": "exists"}
    assert Secret.load(names["database_url_block"]).get() == values["db"]
    assert Secret.load(names["scratch_url_block"]).get() == values["scratch"]
    assert Secret.load(names["age_identity_block"]).get() == "kept"
    # the identity's text, not the bare tag: an all-digit tag (2 % of runs) is also in the block names "db-<tag>"
    assert not any(v in first.output for v in (*values.values(), "pw-", f"KEY-1{tag.upper()}"))

    monkeypatch.setenv("CHARHUB_OPS_SCRATCH_URL", "postgresql://other@elsewhere/x")
    second = runner.invoke(app, ["setup", "--json"], env=env)
    assert second.exit_code == 0, second.output
    assert {outcome for slug, outcome in json.loads(second.stdout)["blocks"].items()
            if slug.removeprefix("secret/") in names.values()} == {"exists"}
    assert Secret.load(names["scratch_url_block"]).get() == values["scratch"]  # never overwritten


def test_setup_stores_the_pitr_passphrase_once_when_pitr_is_on(prefect_server, monkeypatch, tmp_path):
    """With CHARHUB_OPS_PITR_REPOSITORY set, `setup` creates the Secret block pgBackRest's passphrase is read from
    (the operator then removes the variable); without it, no such block is wanted."""
    tag = uuid.uuid4().hex[:8]
    block, passphrase = f"pitr-{tag}", f"pass-{tag}-phrase"
    monkeypatch.setenv("CHARHUB_OPS_PITR_CIPHER_BLOCK", block)
    monkeypatch.setenv("CHARHUB_OPS_PITR_CIPHER_PASS", passphrase)
    monkeypatch.delenv("CHARHUB_OPS_NOTIFY_BLOCK", raising=False)
    runner, env = CliRunner(), {"PREFECT_API_URL": prefect_server}
    off = runner.invoke(app, ["setup", "--json"], env=env)
    assert off.exit_code == 0, off.output
    assert f"secret/{block}" not in json.loads(off.stdout)["blocks"]
    monkeypatch.setenv("CHARHUB_OPS_PITR_REPOSITORY", f"file://{tmp_path}/pitr")
    on = runner.invoke(app, ["setup", "--json"], env=env)
    assert on.exit_code == 0, on.output
    assert json.loads(on.stdout)["blocks"][f"secret/{block}"] == "created"
    assert Secret.load(block).get() == passphrase and passphrase not in on.output


def test_setup_names_the_variable_for_a_block_nobody_gave(prefect_server, monkeypatch):
    tag = uuid.uuid4().hex[:8]
    monkeypatch.setenv("CHARHUB_OPS_SCRATCH_URL_BLOCK", f"scratch-{tag}")
    monkeypatch.setenv("CHARHUB_OPS_NOTIFY_BLOCK", f"custom-webhook/alerts-{tag}")
    for var in ("CHARHUB_OPS_SCRATCH_URL", "CHARHUB_OPS_NOTIFY_URL"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, ["setup"], env={"PREFECT_API_URL": prefect_server})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"block secret/scratch-{tag}: missing" in text
    assert f"Secret block 'scratch-{tag}' (used by forms) is missing: set CHARHUB_OPS_SCRATCH_URL" in text
    assert f".save('scratch-{tag}')" in text and "getpass.getpass" in text
    assert f"notification block 'custom-webhook/alerts-{tag}' (used by automations) is missing: set " \
           "CHARHUB_OPS_NOTIFY_URL" in text


def test_setup_creates_the_notification_block_from_its_url_then_the_automations(prefect_server, monkeypatch):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = f"custom-webhook/alerts-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CHARHUB_OPS_NOTIFY_BLOCK", block)
    monkeypatch.setenv("CHARHUB_OPS_NOTIFY_URL", "http://127.0.0.1:9/hook")
    result = CliRunner().invoke(app, ["setup", "--json"], env={"PREFECT_API_URL": prefect_server})
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["blocks"][block] == "created" and len(out["automations"]) == 6
    assert CustomWebhookNotificationBlock.load(block.split("/")[1]).url == "http://127.0.0.1:9/hook"
