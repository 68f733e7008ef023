"""The path detection → event → incident run through a real Prefect server with the triggers of prefect.yaml."""

from __future__ import annotations

import time
import uuid

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from flows.monitor import monitor_flow


def test_down_event_from_a_monitor_pass_starts_incident_respond_with_the_check_id(prefect_server, tmp_path):
    from deployments.serve import load_deployments

    applied = {d.name: d.apply() for d in load_deployments() if d.name in ("incident-respond", "incident-resolve")}
    cid = f"trig-{uuid.uuid4().hex[:6]}"
    config = tmp_path / "m.yaml"
    config.write_text(yaml.safe_dump({"checks": [{"id": cid, "type": "http", "url": "http://127.0.0.1:9/",
                                                  "threshold": 1, "recovery_threshold": 1}]}))
    time.sleep(1)  # the automations are loaded by the trigger service
    started = time.monotonic()
    (row,) = monitor_flow(config=str(config))
    assert row["state"] == "down" and "down" in row["events"]
    run, created_after = _wait_for_run(applied["incident-respond"], cid, started)
    assert run.parameters == {"check_id": cid}  # the single template is rendered to a plain string
    print(f"failing probe → incident-respond run created: {created_after:.1f} s")


def _wait_for_run(deployment_id, check_id, started):
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            runs = [r for r in client.read_flow_runs(deployment_filter=only)
                    if r.parameters.get("check_id") == check_id]
            if runs or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert runs, "no incident-respond run was created by the down event"
    return runs[0], time.monotonic() - started
