"""One source of truth: what `prefect deploy --all` and deployments.serve register on a real server is the
same, and is what prefect.yaml says (schedules with timezone and active, triggers, parameters, concurrency,
tags, description, work pool)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate

from deployments.serve import ROOT, load_deployments, load_spec

SPEC = load_spec()
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}
TRIGGER_KEYS = ("type", "posture", "match", "expect", "threshold", "within")


@pytest.fixture(scope="module")
def registered(prefect_server):
    """Snapshots of every deployment as registered by `prefect deploy --all`, then by serve's objects."""
    with get_client(sync_client=True) as client:
        if not any(p.name == "charhub-ops" for p in client.read_work_pools()):
            client.create_work_pool(WorkPoolCreate(name="charhub-ops", type="process"))
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "CHARHUB_OPS_HOME": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    by_deploy = _snapshot()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARHUB_OPS_HOME", str(ROOT))
        for deployment in load_deployments(work_pool=True):
            deployment.apply()
    by_serve_pool = _snapshot()
    for deployment in load_deployments():
        deployment.apply()
    return by_deploy, by_serve_pool, _snapshot()


def _snapshot() -> dict[str, dict]:
    with get_client(sync_client=True) as client:
        out = {}
        for dep in client.read_deployments():
            if dep.name not in DEPLOYMENTS:
                continue
            automations = client.read_resource_related_automations(f"prefect.deployment.{dep.id}")
            out[dep.name] = {
                "description": dep.description, "tags": sorted(dep.tags), "parameters": dep.parameters,
                "entrypoint": dep.entrypoint, "pull_steps": dep.pull_steps,
                "work_pool": [dep.work_pool_name, dep.work_queue_name], "paused": dep.paused,
                "enforce_parameter_schema": dep.enforce_parameter_schema,
                "concurrency": [dep.global_concurrency_limit.limit if dep.global_concurrency_limit else None,
                                dep.concurrency_options.collision_strategy.value if dep.concurrency_options
                                else None],
                "schedules": sorted([s.schedule.cron, s.schedule.timezone, s.active, s.parameters]
                                    for s in dep.schedules),
                "triggers": sorted((_trigger(a) for a in automations), key=str),
            }
        return out


def _trigger(automation) -> dict:
    trigger = automation.trigger.model_dump(mode="json")
    (action,) = automation.actions
    return {"name": automation.name, "enabled": automation.enabled, "parameters": action.parameters,
            **{k: trigger[k] for k in TRIGGER_KEYS}}


def test_deploy_and_serve_register_the_same_deployments(registered):
    by_deploy, by_serve_pool, by_serve = registered
    assert set(by_deploy) == set(DEPLOYMENTS)
    assert by_serve_pool == by_deploy
    for name, snap in by_serve.items():  # serve runs flows in-process: no work pool, everything else equal
        assert snap == {**by_deploy[name], "work_pool": [None, None], "pull_steps": snap["pull_steps"]}, name


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_registered_deployment_is_what_the_yaml_says(registered, name):
    dep, snap = DEPLOYMENTS[name], registered[0][name]
    assert snap["description"] == dep["description"].strip() and snap["tags"] == sorted(dep["tags"])
    assert snap["parameters"] == (dep.get("parameters") or {})
    assert snap["paused"] is False and snap["enforce_parameter_schema"] is True
    assert snap["work_pool"] == [dep["work_pool"]["name"], dep["work_pool"]["work_queue_name"]]
    limit = dep.get("concurrency_limit") or {}  # none: the incident flows take incident-<check_id> themselves
    assert snap["concurrency"] == [limit.get("limit"), limit.get("collision_strategy")]
    assert snap["schedules"] == sorted([s["cron"], s["timezone"], s["active"], s.get("parameters", {})]
                                       for s in dep.get("schedules") or [])
    assert len(snap["triggers"]) == len(dep.get("triggers") or [])
    by_event = sorted(dep.get("triggers") or [], key=lambda t: (str(t["match"]), t["expect"]))
    for trigger, spec in zip(sorted(snap["triggers"], key=lambda t: (str(t["match"]), t["expect"])), by_event,
                             strict=True):
        assert trigger["enabled"] is spec["enabled"] and trigger["parameters"] == spec["parameters"]
        assert trigger["expect"] == spec["expect"] and trigger["match"] == spec["match"]
        assert trigger["posture"] == spec.get("posture", "Reactive")


def test_inactive_schedule_and_timezone_survive_serve(tmp_path):
    spec = {"deployments": [{**DEPLOYMENTS["nightly-backup"],
                             "schedules": [{"cron": "0 1 * * *", "timezone": "Europe/Berlin", "active": False}]}]}
    path = tmp_path / "prefect.yaml"
    path.write_text(__import__("yaml").safe_dump(spec))
    (built,) = load_deployments(path)
    (schedule,) = built.schedules
    assert (schedule.schedule.timezone, schedule.active) == ("Europe/Berlin", False)


def test_restore_is_manual_and_its_form_cannot_skip_the_approval():
    dep = DEPLOYMENTS["restore"]
    assert dep["entrypoint"] == "flows/restore.py:restore_flow"
    assert not dep.get("schedules") and not dep.get("triggers")  # manual only
    (restore,) = [d for d in load_deployments() if d.name == "restore"]
    form = restore._parameter_openapi_schema
    assert "replace" in form.definitions["RestoreTarget"]["properties"] and not dep["parameters"]
    assert "approved" not in json.dumps(form.model_dump())
    # the swap flow's `approved` flag is reachable from no deployment: no deployment serves the swap flow
    assert all("swap" not in d["entrypoint"] for d in SPEC["deployments"])


def test_serve_after_setup_runs_the_flows(tmp_path):
    """`charhub-ops setup` then `charhub-ops serve` (the documented order): a run of a served deployment
    completes. Before: serve's update left the worker registration's path None and cleared its pull steps,
    so every run crashed loading the flow ("No such file or directory: '<cwd>/None'")."""
    from tests.harness.prefect_server import BIN, OpsStack, kill, start_prefect_server

    server, api = start_prefect_server(tmp_path)
    stack = OpsStack(home=tmp_path, api=api, server=server, worker_env={})
    serve = None
    try:
        stack.register()
        env = {**os.environ, **stack.client_env(), "CHARHUB_OPS_HOME": str(ROOT),
               "PREFECT_RUNNER_POLL_FREQUENCY": "1"}  # serve's poll for runs (10 s by default)
        with open(tmp_path / "serve.log", "wb") as out:
            serve = subprocess.Popen([str(BIN / "charhub-ops"), "serve"], cwd=ROOT, env=env, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while (dep := stack.request("GET", f"/deployments/{stack.deployment_id('monitor')}"))["status"] != "READY" \
                or dep["work_pool_name"] is not None:  # served: registered again without a pool, and polled
            assert serve.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-2000:]
            time.sleep(0.5)
        config = tmp_path / "monitor.yaml"
        config.write_text(json.dumps({"checks": [{"id": "serve-disk", "type": "disk", "levels": [99, 99.5, 99.9]}],
                                      "incident_dir": str(tmp_path / "incidents")}))
        run = stack.wait_for_state(stack.run("monitor", {"config": str(config), "window_seconds": 0}), timeout=180)
        assert run["state_type"] == "COMPLETED", (run["state"]["message"],
                                                  (tmp_path / "serve.log").read_text()[-2000:])
    finally:
        if serve:
            kill(serve)
        stack.stop()
