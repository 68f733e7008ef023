"""The approval pause (flows/approval.py) on Prefect's test server: a reason is required, and every answer is
recorded with its reason and UTC time in the run's ``approval`` artifact.

A small flow calls ``approve`` exactly as restore, the swap and rollback do, from a deployment run executed in
this process (as a worker would); the answers are sent through the API, as the UI's Resume form sends them.
"""

from __future__ import annotations

import contextvars
import re
import threading
import time
from datetime import UTC, datetime

import pytest
from prefect import flow

from flows.swap import approve  # where restore and rollback import it from

PLAN = "Restore `e2e_app` over production? (plan of the test)"


@flow(name="approval-probe")
def approval_probe() -> dict | None:
    decision = approve(PLAN)
    return decision.model_dump(mode="json") if decision else None


def _state(client, run_id):
    return client.read_flow_run(run_id).state


def _wait(client, run_id, done, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not done(state := _state(client, run_id)):
        assert time.monotonic() < deadline, f"run still {state.name}"
        time.sleep(0.2)
    return state


@pytest.fixture
def paused(prefect_server):
    """(client, run id) of an approval-probe deployment run paused at its approval form."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    deployment_id = approval_probe.to_deployment(name="approval-probe").apply()
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id)
        worker = threading.Thread(target=contextvars.copy_context().run, daemon=True,
                                  args=(run_flow, approval_probe), kwargs={"flow_run": run, "return_type": "state"})
        worker.start()
        _wait(client, run.id, lambda s: s.is_paused() or s.is_final())
        assert _state(client, run.id).is_paused()
        yield client, run.id
        worker.join(60)


def _approval_artifact(client, run_id) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), key=ArtifactFilterKey(any_=["approval"])))
    (artifact,) = artifacts
    return artifact.data


def test_an_answer_without_a_reason_is_refused_and_the_run_stays_paused(paused) -> None:
    client, run_id = paused
    for answer in ({"approve": True}, {"approve": True, "reason": "   "}):
        result = client.resume_flow_run(run_id, run_input=answer)
        assert result.status.value == "REJECT" and "reason" in str(result.details), result
        assert _state(client, run_id).is_paused()
    client.resume_flow_run(run_id, run_input={"approve": False, "reason": "end of the test"})
    _wait(client, run_id, lambda s: s.is_final())


def test_an_approval_records_its_reason_and_time_in_the_run(paused) -> None:
    client, run_id = paused
    before = datetime.now(UTC).replace(microsecond=0)
    client.resume_flow_run(run_id, run_input={"approve": True, "reason": "items deleted by accident"})
    state = _wait(client, run_id, lambda s: s.is_final())
    assert state.is_completed(), state.message
    report = _approval_artifact(client, run_id)
    stamp = re.search(r"\*\*Approved\*\* at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC \(asked [\d:]+ UTC\): (.*)", report)
    assert stamp, report
    assert before <= datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) <= datetime.now(UTC)
    assert stamp[2] == "items deleted by accident" and PLAN in report


def test_a_refusal_is_recorded_too_and_fails_the_run(paused) -> None:
    client, run_id = paused
    client.resume_flow_run(run_id, run_input={"approve": False, "reason": "not during the sale"})
    state = _wait(client, run_id, lambda s: s.is_final())
    assert state.is_failed() and "not approved: not during the sale" in state.message
    assert "**Refused** at " in _approval_artifact(client, run_id)
