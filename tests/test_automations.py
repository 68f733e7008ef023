"""Alerting without code: every automation of deployments/automations.py fires on a real Prefect server and
reaches the notification block (a real webhook); applying them twice changes nothing."""

from __future__ import annotations

import time
import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.states import Crashed, Failed

from deployments.automations import ALERT_EVENTS, apply_automations
from tasks.notify import notify_failure
from tests.harness.webhook import notification_hook, wait_for_body

DEPLOYMENT = f"e2e-alerts-{uuid.uuid4().hex[:6]}"


@flow(name="alert-probe")
def alert_probe() -> None:
    """Never runs: its runs are moved to Failed/Crashed through the API, as a worker would report them."""


@flow(name="failing-probe", on_failure=[notify_failure])
def failing_probe() -> None:
    raise RuntimeError("probe failure")


@pytest.fixture(scope="module")
def alerts(prefect_server):
    with pytest.MonkeyPatch.context() as mp, notification_hook(mp, "ops-alerts") as bodies:
        with get_client(sync_client=True) as client:  # another module's setup may have applied them already
            for automation in client.read_automations():
                if automation.name.startswith("charhub-ops:"):
                    client.delete_automation(automation.id)
        first = apply_automations("custom-webhook/ops-alerts", [DEPLOYMENT])
        second = apply_automations("custom-webhook/ops-alerts", [DEPLOYMENT])
        deployment_id = alert_probe.to_deployment(name=DEPLOYMENT).apply()
        time.sleep(1)  # the automations are loaded by the trigger service
        yield bodies, first, second, deployment_id


def test_applying_twice_changes_nothing(alerts):
    _, first, second = alerts[:3]
    assert set(first.values()) == {"created"} and len(first) == 6
    assert set(second.values()) == {"unchanged"}


@pytest.mark.parametrize("event", ALERT_EVENTS)
def test_charhub_alert_events_notify(alerts, event):
    bodies = alerts[0]
    emit_event(event=event, resource={"prefect.resource.id": "charhub.database.charhub_db"},  # as flows/ emit them
               payload={"url": "postgresql://u:hunter2@db/charhub"})
    body = wait_for_body(bodies, event, "charhub.database.charhub_db")
    assert "hunter2" not in body  # payloads are never forwarded


@pytest.mark.parametrize("state", [Failed, Crashed])
def test_a_failed_or_crashed_run_of_a_deployment_notifies(alerts, state):
    bodies, deployment_id = alerts[0], alerts[3]
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id)
        client.set_flow_run_state(run.id, state(message="probe"), force=True)
    wait_for_body(bodies, f"prefect.flow-run.{state().name}", run.name)


def test_a_deployment_that_stops_being_scheduled_notifies(alerts):
    """The server emits prefect.deployment.not-ready when nothing polls a deployment any more (after
    PREFECT_SERVER_SERVICES_FOREMAN_DEPLOYMENT_LAST_POLLED_TIMEOUT_SECONDS); the same event is sent here."""
    bodies, deployment_id = alerts[0], alerts[3]
    emit_event(event="prefect.deployment.not-ready",
               resource={"prefect.resource.id": f"prefect.deployment.{deployment_id}",
                         "prefect.resource.name": DEPLOYMENT})
    wait_for_body(bodies, "prefect.deployment.not-ready", DEPLOYMENT)


def test_a_failed_deployment_run_notifies_once_and_an_ad_hoc_run_through_its_hook(alerts):
    """The flows' on_failure hook stays silent for a run the failed-runs automation watches (before: two
    messages per failed deployment run); a run outside any deployment is still reported by the hook."""
    bodies = alerts[0]
    deployment_id = failing_probe.to_deployment(name=DEPLOYMENT).apply()
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id)
    from prefect.flow_engine import run_flow

    assert run_flow(failing_probe, flow_run=run, return_type="state").is_failed()  # as a worker runs it
    wait_for_body(bodies, "prefect.flow-run.Failed", run.name)
    ad_hoc = failing_probe(return_state=True)
    wait_for_body(bodies, "failing-probe run", "failed")  # the hook's message
    time.sleep(2)  # the automation answers within ~1 s (above); a second message would have come by now
    assert len([b for b in bodies if run.name in b]) == 1
    assert ad_hoc.is_failed()
