"""What only a real server's background services do, on a `prefect server` with short timeouts:

- the "deployment no longer scheduled" automation: the foreman marks a deployment NOT_READY once nothing has polled
  it for a while (as when `charhub-ops serve` or the last worker stops) and emits `prefect.deployment.not-ready`;
  the automation sends the notification block a message (test_automations.py sends that event itself);
- the `backup-overdue` dead-man switch of prefect.yaml: its proactive trigger starts a run of the deployment when no
  `charhub.backup.completed` arrived within the window (26 h in prefect.yaml; 10 s here, the least Prefect allows);
- the "monitor stopped" automation: once heartbeats stop, one message after the window (15 min; 10 s here), not
  one per window."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.automations import HEARTBEAT_AUTOMATION, apply_automations
from deployments.serve import load_deployments
from tests.harness.prefect_server import drain_events, kill, start_prefect_server
from tests.harness.webhook import notification_hook, wait_for_body

DEPLOYMENT = f"e2e-not-ready-{uuid.uuid4().hex[:6]}"
FOREMAN = {"PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS": "1",
           "PREFECT_SERVER_SERVICES_FOREMAN_DEPLOYMENT_LAST_POLLED_TIMEOUT_SECONDS": "3"}


@flow(name="not-ready-probe")
def not_ready_probe() -> None:
    """Never runs: only its deployment's readiness matters."""


@pytest.fixture(scope="module")
def foreman_server(tmp_path_factory):
    proc, api = start_prefect_server(tmp_path_factory.mktemp("foreman"), services=True, settings=FOREMAN)
    try:
        yield api
    finally:
        drain_events()
        kill(proc)


def test_a_deployment_nothing_polls_any_more_notifies(foreman_server, monkeypatch):
    with temporary_settings({PREFECT_API_URL: foreman_server}), \
            notification_hook(monkeypatch, "ops-alerts") as bodies:
        deployment_id = not_ready_probe.to_deployment(name=DEPLOYMENT).apply()
        apply_automations("custom-webhook/ops-alerts", [DEPLOYMENT])
        with get_client(sync_client=True) as client:
            # one poll, as `serve` does: the server marks the deployment READY (a background task); the foreman
            # emits not-ready only on the way back from READY, so the message proves both transitions
            client.get_scheduled_flow_runs_for_deployments([deployment_id])
            # the foreman's timeout is 3 s here (production default 60 s)
            wait_for_body(bodies, "prefect.deployment.not-ready", DEPLOYMENT, timeout=90)
            assert client.read_deployment(deployment_id).status.value == "NOT_READY"


def test_backup_overdue_starts_the_incident_flow_when_no_backup_completes(foreman_server):
    (overdue,) = [d for d in load_deployments() if d.name == "backup-overdue"]  # as prefect.yaml declares it
    assert overdue.triggers[0].within == timedelta(hours=26)
    overdue.triggers[0].within = timedelta(seconds=10)  # the shortest a proactive trigger may have
    with temporary_settings({PREFECT_API_URL: foreman_server}), get_client(sync_client=True) as client:
        deployment_id = overdue.apply()
        deadline = time.monotonic() + 120  # the window, then the triggers service's next proactive evaluation
        while not (runs := client.read_flow_runs(deployment_filter=DeploymentFilter(id={"any_": [deployment_id]}))):
            assert time.monotonic() < deadline, "the proactive trigger started no run"
            time.sleep(1)
    assert runs[0].parameters["check_id"] == "backup-overdue" and "26 h" in runs[0].parameters["detail"]


def test_a_monitor_whose_heartbeat_stops_notifies_once(foreman_server, monkeypatch):
    with temporary_settings({PREFECT_API_URL: foreman_server}), \
            notification_hook(monkeypatch, "ops-alerts") as bodies:
        apply_automations("custom-webhook/ops-alerts", [DEPLOYMENT], heartbeat_within=10)
        time.sleep(2)  # the automations are loaded by the trigger service
        for _ in range(2):  # as charhub_ops.monitoring.loop sends it; then the monitor "dies"
            event = {"id": str(uuid.uuid4()), "occurred": datetime.now(UTC).isoformat(),
                     "event": "charhub.monitor.heartbeat", "resource": {"prefect.resource.id": "charhub.monitor"},
                     "payload": {"source": "test", "checks": 1}}
            httpx.post(f"{foreman_server}/events", json=[event], timeout=10).raise_for_status()
            time.sleep(1)
        wait_for_body(bodies, HEARTBEAT_AUTOMATION, "no charhub.monitor.heartbeat", timeout=90)
        time.sleep(15)  # another window without a heartbeat: a repeat would have come by now (it did
        # without for_each: the server opens a new window after each firing)
    assert len([b for b in bodies if HEARTBEAT_AUTOMATION in b]) == 1
