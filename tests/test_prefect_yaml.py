"""prefect.yaml: Prefect ignores misspelled keys silently, so every key is checked here."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from prefect.cli.deploy._models import (
    ConcurrencyLimitSpec,
    DeploymentConfig,
    PrefectYamlModel,
    WorkPoolConfig,
)
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}


def aliases(model) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()} | set(model.model_fields)


def test_top_level_keys_are_known():
    assert set(SPEC) <= aliases(PrefectYamlModel)
    PrefectYamlModel.model_validate(SPEC)


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_deployment_keys_are_known(name):
    dep = DEPLOYMENTS[name]
    assert set(dep) <= aliases(DeploymentConfig), set(dep) - aliases(DeploymentConfig)
    assert set(dep.get("work_pool", {})) <= aliases(WorkPoolConfig)
    if isinstance(dep.get("concurrency_limit"), dict):
        assert set(dep["concurrency_limit"]) <= aliases(ConcurrencyLimitSpec)
    for schedule in dep.get("schedules", []):
        assert set(schedule) <= aliases(DeploymentScheduleCreate) | aliases(CronSchedule)
    for trigger in dep.get("triggers", []):
        assert set(trigger) <= aliases(DeploymentEventTrigger), set(trigger) - aliases(DeploymentEventTrigger)
        DeploymentEventTrigger.model_validate(trigger)


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_entrypoint_loads_and_parameters_exist(name):
    dep = DEPLOYMENTS[name]
    flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
    params = set(inspect.signature(flow.fn).parameters)
    assert set(dep.get("parameters") or {}) <= params
    for trigger in dep.get("triggers", []):
        assert set(trigger.get("parameters") or {}) <= params


def test_nightly_backup_schedule_and_concurrency():
    dep = DEPLOYMENTS["nightly-backup"]
    (schedule,) = dep["schedules"]
    assert schedule["cron"] == "30 2 * * *" and schedule["timezone"] == "UTC"
    assert dep["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert dep["work_pool"]["name"] == "charhub-ops"


def test_serve_builds_every_deployment():
    from deployments.serve import load_deployments

    built = load_deployments()
    assert sorted(d.name for d in built) == sorted(DEPLOYMENTS)
    nightly = next(d for d in built if d.name == "nightly-backup")
    assert nightly.concurrency_options.collision_strategy.value == "CANCEL_NEW"


def test_migrate_is_manual_and_a_dry_run_by_default():
    dep = DEPLOYMENTS["migrate"]
    assert dep["entrypoint"] == "flows/migrate.py:migrate_flow"
    assert not dep.get("schedules") and not dep.get("triggers")  # manual only
    assert dep["parameters"]["dry_run"] is True
    flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
    assert inspect.signature(flow.fn).parameters["dry_run"].default is True  # the form's default too
    assert dep["concurrency_limit"]["limit"] == 1


def test_cleanup_runs_weekly_after_verify_and_docker_on_disk_high():
    dep = DEPLOYMENTS["cleanup"]
    assert dep["entrypoint"] == "flows/cleanup.py:cleanup_flow"
    (schedule,) = dep["schedules"]
    assert schedule["cron"] == "30 4 * * 0" and schedule["timezone"] == "UTC"  # Sunday, after the 04:00 verify
    (verify,) = DEPLOYMENTS["verify-after-backup"]["schedules"]
    assert verify["cron"] == "0 4 * * 0"
    (trigger,) = dep["triggers"]
    assert trigger["expect"] == ["charhub.disk.high"] and trigger["parameters"] == {"parts": ["docker"]}
    flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
    assert inspect.signature(flow.fn).parameters["parts"].default == ("rows", "storage", "docker", "prefect")
    assert dep["concurrency_limit"]["limit"] == 1


def test_monitor_runs_hourly_windows_that_never_overlap():
    """One flow run an hour probing for 59 min (issue 18: not a process per pass); the window ends before the
    next run is due, so CANCEL_NEW never drops the next window."""
    dep = DEPLOYMENTS["monitor"]
    assert dep["entrypoint"] == "flows/monitor.py:monitor_flow"
    (schedule,) = dep["schedules"]
    assert schedule["cron"] == "0 * * * *" and schedule["timezone"] == "UTC"
    assert 0 < dep["parameters"]["window_seconds"] <= 3600 - 60
    assert dep["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}


@pytest.mark.parametrize(("name", "event"), [("incident-respond", "charhub.service.down"),
                                             ("incident-resolve", "charhub.service.recovered")])
def test_incident_deployments_are_triggered_with_the_check_id(name, event):
    dep = DEPLOYMENTS[name]
    (trigger,) = [t for t in dep["triggers"] if t["match"]["prefect.resource.id"] == "charhub.check.*"]
    parsed = DeploymentEventTrigger.model_validate(trigger)
    assert parsed.expect == {event} and parsed.posture.value == "Reactive"
    assert trigger["match"] == {"prefect.resource.id": "charhub.check.*"}
    assert trigger["parameters"] == {"check_id": "{{ event.payload.check_id }}"}  # one template: a string comes out


def test_backup_overdue_is_a_proactive_dead_man_switch():
    dep = DEPLOYMENTS["backup-overdue"]
    assert dep["entrypoint"] == "flows/incident.py:incident_respond_flow"
    (trigger,) = dep["triggers"]
    parsed = DeploymentEventTrigger.model_validate(trigger)
    assert parsed.posture.value == "Proactive" and parsed.expect == {"charhub.backup.completed"}
    assert parsed.within.total_seconds() == 26 * 3600 and parsed.threshold == 1
    assert trigger["parameters"]["check_id"] == "backup-overdue" and "{{" not in str(trigger["parameters"])


def test_backup_overdue_resolves_on_the_next_completed_backup():
    (trigger,) = [t for t in DEPLOYMENTS["incident-resolve"]["triggers"]
                  if t["match"]["prefect.resource.id"] == "charhub.database.*"]
    parsed = DeploymentEventTrigger.model_validate(trigger)
    assert parsed.expect == {"charhub.backup.completed"} and parsed.posture.value == "Reactive"
    assert trigger["parameters"] == {"check_id": "backup-overdue"}


@pytest.mark.parametrize("name", ["incident-respond", "incident-resolve", "backup-overdue"])
def test_incident_runs_are_not_limited_globally(name):
    """One run at a time per check id (the flow's incident-<check_id> limit), not one for every check."""
    assert "concurrency_limit" not in DEPLOYMENTS[name]
