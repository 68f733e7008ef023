"""Incidents that end (issue 16, items 8–10), on a real Prefect server (and Docker engine for the restart budget):

* respond re-probes first and opens nothing when the check passes again;
* attaching to an open incident notifies once with the new detail;
* runs of one check take turns (global concurrency limit ``incident-<check_id>``), other checks proceed;
* ``backup-overdue`` resolves on the next ``charhub.backup.completed`` (prefect.yaml's trigger), so its next
  episode opens a new incident; ``charhub-ops incident resolve ID`` closes one by hand;
* the restart budget belongs to the container, not to the check;
* every command resolves the state store by one rule: ``auto`` without a server refuses to write a window
  where no worker reads it; a server named only in the active Prefect profile counts.
"""

from __future__ import annotations

import contextvars
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from charhub_ops.cli import app
from charhub_ops.errors import ConfigError
from charhub_ops.monitoring.incident_model import new_incident
from charhub_ops.settings import load_settings
from flows.incident import incident_resolve_flow, incident_respond_flow
from tests.harness.monitor import (
    backend_fixture,  # noqa: F401 - fixture
    http_check,
    new_id,
    passes,
    store,
    write_config,
)
from tests.harness.services import free_port
from tests.harness.webhook import notification_hook


def _failing(cid: str, port: int, **extra) -> dict:
    return {"id": cid, "type": "http", "url": f"http://127.0.0.1:{port}/health", "timeout": 2,
            "latency_budget_ms": 5000, "threshold": 1, "recovery_threshold": 1, "mitigations": [], **extra}


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_respond_after_the_check_recovered_opens_nothing(prefect_server, tmp_path):
    cid, port = new_id("late"), free_port()
    config = write_config(tmp_path, [_failing(cid, port)])
    assert passes(config, 1)[0]["state"] == "down"  # the down event is emitted here...
    server = http.server.HTTPServer(("127.0.0.1", port), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:  # ...and the service is back before the incident run starts
        result = incident_respond_flow(check_id=cid, config=config)
    finally:
        server.shutdown()
        server.server_close()
    assert result["incident_id"] is None and result["healthy"].startswith("200")
    assert not [i for i in store().incidents() if i.check_id == cid]


def test_a_second_down_attaches_and_notifies_once_with_the_new_detail(prefect_server, tmp_path, monkeypatch):
    cid = new_id("attach")
    config = write_config(tmp_path, [_failing(cid, free_port())])
    with notification_hook(monkeypatch, new_id("attach-alerts")) as received:
        first = incident_respond_flow(check_id=cid, config=config)
        before = len(received)
        again = incident_respond_flow(check_id=cid, config=config, detail="second outage: connection refused")
    assert again["incident_id"] == first["incident_id"]
    new = received[before:]
    assert len(new) == 1 and "down again" in new[0] and "second outage: connection refused" in new[0]
    assert store().incident(first["incident_id"]).downs == 2


def test_runs_of_one_check_take_turns_while_other_checks_proceed(prefect_server, tmp_path):
    from prefect.concurrency.sync import concurrency

    from tasks.locks import _ensure_limit

    a, b = new_id("turn-a"), new_id("turn-b")
    config = write_config(tmp_path, [_failing(a, free_port()), _failing(b, free_port())])
    done: dict = {}
    run_a = threading.Thread(target=contextvars.copy_context().run, daemon=True,
                             args=(lambda: done.update(a=incident_respond_flow(check_id=a, config=config)),))
    _ensure_limit(f"incident-{a}")
    with concurrency(f"incident-{a}", occupy=1, strict=True):  # another run of check a holds its slot
        run_a.start()
        assert incident_respond_flow(check_id=b, config=config)["incident_id"]  # b does not wait for a
        assert run_a.is_alive() and "a" not in done  # a waits for its own check's slot
    run_a.join(120)
    assert done["a"]["incident_id"]


def test_backup_overdue_resolves_on_the_next_completed_backup(prefect_server, tmp_path, monkeypatch):
    from prefect.events import emit_event

    from deployments.serve import load_deployments

    monkeypatch.setenv("CHARHUB_OPS_REPOSITORY", f"file://{tmp_path}/empty-repo")  # the re-probe: no backup
    config = write_config(tmp_path, [])
    first = incident_respond_flow(check_id="backup-overdue", config=config, detail="no backup within 26 h")
    assert first["incident_id"] and first["status"] == "escalated"
    (resolver,) = [d for d in load_deployments() if d.name == "incident-resolve"]  # with prefect.yaml's triggers
    deployment_id = resolver.apply()
    time.sleep(1)  # the automation is loaded by the trigger service
    emitted = datetime.now(UTC)
    emit_event(event="charhub.backup.completed", resource={"prefect.resource.id": "charhub.database.charhub_db"},
               payload={"backup_id": "20261204T030000Z-0001", "database": "charhub_db"})
    run = _wait_for_run(deployment_id, emitted)
    assert run.parameters == {"check_id": "backup-overdue"}
    closed = incident_resolve_flow(check_id="backup-overdue", config=config)  # what that run executes
    assert closed["resolved"] and closed["incident_id"] == first["incident_id"]
    second = incident_respond_flow(check_id="backup-overdue", config=config, detail="no backup within 26 h")
    assert second["incident_id"] and second["incident_id"] != first["incident_id"]  # the next episode is seen
    incident_resolve_flow(check_id="backup-overdue", config=config)


def _wait_for_run(deployment_id, after: datetime):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + 60
    only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = [r for r in client.read_flow_runs(deployment_filter=only) if r.created and r.created >= after]
            if runs:
                return runs[0]
            time.sleep(0.5)
    raise AssertionError("no incident-resolve run was created by charhub.backup.completed")


def test_incident_resolve_by_hand_frees_the_checks_slot(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARHUB_OPS_MONITOR_STATE", f"file://{tmp_path}/state")
    from charhub_ops.monitoring.store import repository_state

    state = repository_state(load_settings(), None, False)
    inc = new_incident("stuck", "high", "down", datetime.now(UTC), None, None, 3)
    state.save_incident(inc)
    runner = CliRunner()
    result = runner.invoke(app, ["incident", "resolve", inc.id, "--reason", "fixed by hand", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "resolved"
    closed = state.incident(inc.id)
    assert closed.status == "resolved" and state.open_incident("stuck") is None
    assert "resolved by hand" in closed.timeline[-1].what and "fixed by hand" in closed.timeline[-1].what
    again = runner.invoke(app, ["incident", "resolve", inc.id])
    assert again.exit_code == 1 and "already resolved" in again.output and "Traceback" not in again.output
    missing = runner.invoke(app, ["incident", "resolve", "nope"])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_the_restart_budget_belongs_to_the_container_not_the_check(backend, prefect_server, tmp_path):
    a, b = new_id("budget-a"), new_id("budget-b")
    config = write_config(tmp_path, [http_check(backend, a), http_check(backend, b)], restart_budget_per_hour=1)
    backend.container.kill()
    first = incident_respond_flow(check_id=a, config=config)
    assert first["actions"][0]["ran"] and backend.container.status == "running"
    backend.container.kill()
    second = incident_respond_flow(check_id=b, config=config)  # another check, the same container
    assert not second["actions"][0]["ran"] and "over budget" in second["actions"][0]["detail"]
    assert backend.container.status == "exited"
    assert len(store().restarts(backend.name)) == 1


# --- item 10: one rule for the state store ----------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "server", "shared", "expected"), [
    ("auto", True, True, "prefect"),
    ("auto", True, False, "prefect"),
    ("prefect", True, True, "prefect"),
    ("auto", False, False, "file://./backups"),           # health's own streaks, without a server
    ("repository", False, True, "file://./backups"),
    ("repository", True, True, "file://./backups"),        # explicit: the repository even with a server
    ("s3://b/state", True, True, "s3://b/state"),
    ("auto", False, True, "CHARHUB_OPS_MONITOR_STATE"),    # a window no worker would read: refused
    ("prefect", False, False, "CHARHUB_OPS_MONITOR_STATE"),  # Variables on an ephemeral API vanish
    ("ftp://x", True, True, "use auto, prefect"),
])
def test_one_rule_resolves_the_state_store(spec, server, shared, expected, monkeypatch):
    from charhub_ops.monitoring.store import resolve_state

    monkeypatch.delenv("CHARHUB_OPS_REPOSITORY", raising=False)
    settings = load_settings()
    try:
        where = resolve_state(settings, spec, server, shared)
    except ConfigError as exc:
        where = str(exc)
        assert "\n" not in where
    assert expected in where


def _cli_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_") and k not in ("CHARHUB_OPS_MONITOR_STATE",)}
    return {**env, "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "CHARHUB_OPS_REPOSITORY": f"file://{tmp_path}/repo", **extra}


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "charhub_ops.cli", *args], capture_output=True, text=True, env=env)


def _maintenance_start(env: dict, check: str) -> subprocess.CompletedProcess:
    return _cli(env, "maintenance", "start", "--check", check, "--for", "30m", "--reason", "deploy", "--json")


@pytest.mark.parametrize("command", [
    ["maintenance", "start", "--check", "backend", "--for", "30m"],
    ["deploy", "pre", "--service", "charhub-backend-1", "--no-backup"],
    ["incident", "respond", "--check", "backend"],
    ["incident", "resolve", "backend-20261204t000000z"],
    ["incident", "list"],
])
def test_without_a_server_auto_refuses_what_the_workers_must_see(command, tmp_path):
    config = write_config(tmp_path, [{"id": "backend", "type": "http", "url": "http://127.0.0.1:9/",
                                      "container": "charhub-backend-1"}])
    done = _cli(_cli_env(tmp_path, CHARHUB_OPS_MONITOR_CONFIG=config), *command)
    assert done.returncode == 1, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "CHARHUB_OPS_MONITOR_STATE" in lines[0] and "PREFECT_API_URL" in lines[0], lines
    assert not (tmp_path / "repo").exists()  # nothing went to the repository


def test_a_server_named_only_in_the_prefect_profile_is_where_windows_go(prefect_server, tmp_path):
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "profiles.toml").write_text(f'active = "ops"\n\n[profiles.ops]\nPREFECT_API_URL = "{prefect_server}"\n')
    check = new_id("profiled")
    done = _maintenance_start(_cli_env(tmp_path), check)
    assert done.returncode == 0, done.stderr
    window = json.loads(done.stdout)
    assert [w.id for w in store().windows() if check in w.checks] == [window["id"]]  # what workers read
    assert not (tmp_path / "repo").exists()
    store().delete_window(window["id"])
