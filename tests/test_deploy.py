"""Deploy guard and rollback against a real Docker engine, real PostgreSQL and the Prefect test server.

Two locally built versions of a small HTTP service (tests/harness/service_images.py): v1 answers /health,
v2 does not. The "deploy" replaces the container the way compose does (same options, other image).
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import psycopg
import pytest
from typer.testing import CliRunner

from charhub_ops.backup.catalog import list_backups
from charhub_ops.cli import app
from charhub_ops.errors import ConfigError, DockerError, VerificationError
from charhub_ops.storage import open_storage
from flows.deploy import post_deploy_flow, pre_deploy_flow, rollback_flow
from tests.harness.monitor import new_id, write_config
from tests.harness.service_images import (
    V1,
    V2,
    build_image,
    comparable,
    configure,
    deploy_env_fixture,  # noqa: F401 - fixture
    service_fixture,  # noqa: F401 - fixture
)
from tests.harness.webhook import notification_hook


def repository_backups(repo: str):
    return list_backups(open_storage(repo))


def test_failed_gate_then_rollback_returns_the_first_release_identically(service, deploy_env, tmp_path,
                                                                        monkeypatch):
    configure(service, tmp_path, monkeypatch)
    service.sh("echo precious > /data/keep")
    original = service.inspect()
    with notification_hook(monkeypatch, new_id("deploy-alerts")) as received:
        pre = pre_deploy_flow(services=[service.name], release="v2.0.0")
        assert pre["label"] == "pre-deploy-v2.0.0" and pre["services"][0]["last_good"]
        (backup,) = repository_backups(deploy_env)
        assert backup.label == "pre-deploy-v2.0.0" and backup.backup_id == pre["backup_id"]

        service.run(V2)  # the deploy: same options, the unhealthy image
        post = CliRunner().invoke(app, ["deploy", "post", "--service", service.name, "--json"])
        assert post.exit_code == 1, post.output
        verdict = json.loads(post.stdout)
        assert verdict["healthy"] is False and verdict["services"][0]["healthy"] is False
        assert "status 404" in next(iter(verdict["failing"].values()))

        out = rollback_flow(services=[service.name], reason="deploy gate failed")
        assert any("deploy gate FAILED" in body for body in received)
        assert any("rolled back (healthy)" in body for body in received)
    (row,) = out["services"]
    assert (row["from_image"], row["to_image"], row["healthy"]) == (verdict["services"][0]["image_id"],
                                                                    original["Image"], True)
    after = service.inspect()
    assert after["Id"] != original["Id"] and after["Config"]["Hostname"] == after["Id"][:12]
    before, now = comparable(original), comparable(after)
    assert [k for k in sorted(before) if before[k] != now.get(k)] == []  # field by field from docker inspect
    assert service.sh("cat /data/keep").strip() == "precious"  # the volume survived with its content
    assert service.client.volumes.get(service.volume).name == service.volume
    assert service.answers() == 200
    replaced = service.client.containers.get(row["replaced_container"])
    assert replaced.status == "exited" and replaced.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    print(f"gate failed after {verdict['gate_seconds']} s; rollback {out['seconds']} s "
          f"(of which the gate {out['gate_seconds']} s)")
    report = open(out["report"]).read()
    assert os.path.basename(out["report"]).endswith(".md") and "-deploy-rolled-back-" in out["report"]
    for section in ("# Incident: deployment of", "**Status**: Resolved", "## Timeline", "pre-deploy guard for v2.0.0",
                    "## Root Cause", "deploy gate failed", "## Resolution", "`rollback` ran: ok", "## Action Items",
                    "## Lessons Learned", "### Logs of the replaced container"):
        assert section in report, section
    assert "t0ken" not in report  # env values never leave the repository


def test_a_deploy_window_suppresses_incidents_and_expires_by_itself(service, deploy_env, tmp_path, monkeypatch):
    from charhub_ops.monitoring.config import load_config
    from charhub_ops.monitoring.runner import run_pass
    from charhub_ops.monitoring.store import repository_state
    from charhub_ops.settings import load_settings
    from flows.incident import incident_respond_flow

    cid = configure(service, tmp_path, monkeypatch)
    pre = pre_deploy_flow(services=[service.name], backup=False)
    service.run(V2)
    settings = load_settings()
    store, cfg = repository_state(settings, None, False), load_config(settings.monitor.config)
    (window,) = [w for w in store.windows() if w.id == pre["window_id"]]
    assert window.checks == [cid] and window.end - window.start == timedelta(minutes=settings.deploy.window_minutes)
    (row,) = run_pass(cfg, store, settings, window.start + timedelta(seconds=1))
    assert not row["ok"] and row["state"] == "maintenance" and row["events"] == ["failed", "suppressed"]
    assert incident_respond_flow(check_id=cid)["incident_id"] is None  # no incident inside the window
    (row,) = run_pass(cfg, store, settings, window.end + timedelta(seconds=1))  # the window has ended by itself
    assert row["state"] == "down" and "down" in row["events"]
    assert store.windows() == [window]  # nobody closed it


def test_a_missing_last_good_image_is_refused_before_anything_changes(service, deploy_env, tmp_path, monkeypatch):
    configure(service, tmp_path, monkeypatch)
    doomed = f"charhub-ops-svc:gone-{new_id('v')}"
    doomed_id = build_image(service.client, doomed, doomed, healthy=True)
    service.run(doomed)
    pre_deploy_flow(services=[service.name], backup=False)
    service.run(V2)
    service.client.images.remove(doomed_id, force=True)  # removed by hand since, its last-good pin with it
    running = service.inspect()
    with pytest.raises(DockerError, match="last-good image .* no longer exists on this engine; nothing was changed"):
        rollback_flow(services=[service.name])
    assert service.inspect() == running  # same container, same state: untouched
    assert [c.name for c in service.client.containers.list(all=True, filters={"name": service.name})] == [
        service.name]
    other = {"id": "other", "type": "http", "url": "http://127.0.0.1:9/health", "container": "nothing-here"}
    config = write_config(tmp_path, [other])
    with pytest.raises(ConfigError, match="no last-good release recorded for nothing-here"):
        rollback_flow(services=["nothing-here"], config=config)


def test_restore_data_needs_yes_and_brings_back_the_pre_deploy_data(service, deploy_env, database, tmp_path,
                                                                   monkeypatch):
    configure(service, tmp_path, monkeypatch)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE release_data (id int)")
        conn.execute("INSERT INTO release_data VALUES (1)")
    pre = pre_deploy_flow(services=[service.name], release="v3")
    service.run(V2)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("INSERT INTO release_data VALUES (2)")  # what the bad release wrote
    refused = CliRunner().invoke(app, ["rollback", "--service", service.name, "--restore-data"])
    assert refused.exit_code == 1 and "confirm with --yes" in refused.output
    out = rollback_flow(services=[service.name], restore_data=True)
    assert out["restored_backup"] == pre["backup_id"] and out["services"][0]["healthy"]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT array_agg(id) FROM release_data").fetchone()[0] == [1]
    assert V1 in service.container.image.tags


def test_a_failed_gate_starts_the_rollback_deployment_with_the_services(service, deploy_env, tmp_path, monkeypatch):
    """prefect.yaml's trigger: charhub.deploy.gate-failed → a rollback run whose `services` is a list."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from deployments.serve import load_deployments

    (deployment,) = [d for d in load_deployments() if d.name == "rollback"]
    deployment_id = deployment.apply()
    configure(service, tmp_path, monkeypatch)
    service.run(V2)
    time.sleep(1)  # the automations are loaded by the trigger service
    with pytest.raises(VerificationError, match="deploy gate failed"):
        post_deploy_flow(services=[service.name])
    only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    deadline, runs = time.monotonic() + 60, []
    with get_client(sync_client=True) as client:
        while not runs and time.monotonic() < deadline:
            runs = [r for r in client.read_flow_runs(deployment_filter=only)
                    if r.parameters.get("services") == [service.name]]
            time.sleep(0.2)
    assert runs, "no rollback run was created by the gate-failed event"
    assert runs[0].parameters["reason"].startswith("health gate failed after the deploy: ")
    assert "status 404" in runs[0].parameters["reason"]


def test_a_failed_recreate_puts_the_old_container_back(service):
    """The create fails (its network is gone): the running container gets its name, policy and state back."""
    from datetime import UTC, datetime

    from charhub_ops.deploy.record import from_inspect
    from charhub_ops.deploy.recreate import recreate

    before = service.inspect()
    record = from_inspect(before, datetime.now(UTC))
    broken = record.model_copy(update={"network_mode": "charhub-ops-no-such-net",
                                       "networks": {"charhub-ops-no-such-net": record.networks[service.network]}})
    with pytest.raises(DockerError, match="create"):
        recreate(service.client, broken, V1, datetime.now(UTC))
    after = service.inspect()
    assert after["Id"] == before["Id"] and after["State"]["Running"]
    assert after["HostConfig"]["RestartPolicy"] == before["HostConfig"]["RestartPolicy"]
    assert [c.name for c in service.client.containers.list(all=True, filters={"name": service.name})] == [
        service.name]
    assert service.sh("echo alive").strip() == "alive"


def test_restore_data_from_the_deployment_waits_for_approval_and_a_refusal_changes_nothing(
        service, deploy_env, tmp_path, monkeypatch):
    """The `rollback` deployment with restore_data pauses with restore's approval form; refused: nothing done."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run

    from tests.harness.monitor import serving_one_run

    configure(service, tmp_path, monkeypatch)
    pre_deploy_flow(services=[service.name], release="v4")
    service.run(V2)
    running = service.inspect()["Id"]
    with serving_one_run(rollback_flow, "rollback", lambda params: params.get("restore_data") is True):
        run = run_deployment("rollback/rollback", parameters={"services": [service.name], "restore_data": True},
                             timeout=0)
        state = _wait_state(run.id, lambda s: s.is_paused() or s.is_final())
        assert state.is_paused(), state
        resume_flow_run(run.id, run_input={"approve": False, "reason": "not now"})
        state = _wait_state(run.id, lambda s: s.is_final())
    assert state.is_failed() and "not approved: not now" in state.message
    assert service.inspect()["Id"] == running  # nothing was recreated
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).parameters["restore_data"] is True


def _wait_state(run_id, done, timeout: float = 120):
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(run_id).state
            if (state and done(state)) or time.monotonic() > deadline:
                return state
            time.sleep(0.2)
