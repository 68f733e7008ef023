"""The "deployment no longer scheduled" automation, fired by the server itself: a real `prefect server` whose
foreman marks a deployment NOT_READY once nothing has polled it for a while (as when `charhub-ops serve` or the
last worker stops) and emits `prefect.deployment.not-ready`; the automation sends the notification block a message.
(test_automations.py sends that event itself; here nothing but the server does.)"""

from __future__ import annotations

import time
import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.automations import apply_automations
from tests.harness.prefect_server import kill, start_prefect_server
from tests.harness.webhook import notification_hook

DEPLOYMENT = f"e2e-not-ready-{uuid.uuid4().hex[:6]}"
FOREMAN = {"PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS": "1",
           "PREFECT_SERVER_SERVICES_FOREMAN_DEPLOYMENT_LAST_POLLED_TIMEOUT_SECONDS": "3"}


@flow(name="not-ready-probe")
def not_ready_probe() -> None:
    """Never runs: only its deployment's readiness matters."""


@pytest.fixture
def foreman_server(tmp_path):
    proc, api = start_prefect_server(tmp_path, services=True, settings=FOREMAN)
    try:
        yield api
    finally:
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
            deadline = time.monotonic() + 90  # the foreman's timeout is 3 s here (production default 60 s)
            while not any("prefect.deployment.not-ready" in b and DEPLOYMENT in b for b in bodies):
                assert time.monotonic() < deadline, f"no not-ready notification; received: {bodies}"
                time.sleep(0.5)
            assert client.read_deployment(deployment_id).status.value == "NOT_READY"
