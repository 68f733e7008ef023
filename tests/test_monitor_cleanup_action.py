"""The disk mitigation ``docker_cleanup`` starts a real run of prefect.yaml's ``cleanup`` deployment
(``cleanup_deployment: cleanup/cleanup``, the Docker part only) on the test server — as a dry run, so nothing
is deleted on the machine's Docker engine."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from flows.cleanup import cleanup_flow
from flows.incident import incident_resolve_flow, incident_respond_flow
from tests.harness.monitor import new_id, passes, serving_one_run, small_tmpfs_fixture, write_config  # noqa: F401

DRY = {"parts": ["docker"], "dry_run": True}


def test_docker_cleanup_runs_the_cleanup_deployment(small_tmpfs, prefect_server, tmp_path):
    cid = new_id("disk")
    config = write_config(tmp_path, [{"id": cid, "type": "disk", "paths": [str(small_tmpfs)], "threshold": 1,
                                      "recovery_threshold": 1, "mitigations": ["docker_cleanup"]}],
                          cleanup_deployment="cleanup/cleanup", cleanup_parameters=DRY, recheck_seconds=0)
    (small_tmpfs / "fill").write_bytes(b"x" * int(1.8 * 2**20))  # 90 %: past the critical level
    assert passes(config, 1)[0]["state"] == "down"
    with serving_one_run(cleanup_flow, "cleanup", lambda params: params == DRY) as deployment_id:
        result = incident_respond_flow(check_id=cid, config=config)
    (action,) = result["actions"]
    assert (action["action"], action["ran"]) == ("docker_cleanup", True)
    assert "deployment cleanup/cleanup ran" in action["detail"]
    assert not action["ok"] and result["status"] == "escalated"  # a dry run frees nothing: the disk stays full
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    (run,) = [r for r in runs if r.parameters == DRY]
    assert run.state.is_completed() and run.name in action["detail"]
    (small_tmpfs / "fill").unlink()
    assert "recovered" in passes(config, 1)[0]["events"]
    assert incident_resolve_flow(check_id=cid, config=config)["resolved"]
