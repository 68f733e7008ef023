"""The pgBackRest deployments of prefect.yaml (issue 19): weekly full, daily differential, expire after each
physical backup, weekly drill, manual restore and recover-table (dry runs by default, no schedule)."""

from __future__ import annotations

import inspect

import pytest
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.flows import load_flow_from_entrypoint

from tests.test_prefect_yaml import DEPLOYMENTS, ROOT

PITR = {"pitr-full", "pitr-diff", "pitr-expire", "pitr-verify", "pitr-restore", "pitr-recover-table"}


def _schedule(name: str) -> dict:
    (schedule,) = DEPLOYMENTS[name]["schedules"]
    assert schedule["timezone"] == "UTC" and schedule["active"] is True
    return schedule


def test_every_pitr_deployment_exists_with_the_project_tag():
    assert PITR <= set(DEPLOYMENTS)
    for name in PITR:
        dep = DEPLOYMENTS[name]
        assert dep["entrypoint"].startswith(("flows/pitr.py:", "flows/pitr_restore.py:")), name
        assert "charhub-ops" in dep["tags"], name
        assert dep["concurrency_limit"]["limit"] == 1 and dep["work_pool"]["name"] == "charhub-ops", name


def test_weekly_full_on_sunday_and_a_differential_every_other_day_before_the_logical_backup():
    full, diff = _schedule("pitr-full"), _schedule("pitr-diff")
    assert full["cron"] == "30 1 * * 0" and DEPLOYMENTS["pitr-full"]["parameters"] == {"kind": "full"}
    assert diff["cron"] == "30 1 * * 1-6" and DEPLOYMENTS["pitr-diff"]["parameters"] == {"kind": "diff"}
    (logical,) = DEPLOYMENTS["nightly-backup"]["schedules"]
    assert logical["cron"] == "30 2 * * *"  # an hour later: the two never copy the cluster at once


def test_expire_follows_every_physical_backup():
    (trigger,) = DEPLOYMENTS["pitr-expire"]["triggers"]
    parsed = DeploymentEventTrigger.model_validate(trigger)
    assert parsed.expect == {"charhub.pitr.backup.completed"} and parsed.posture.value == "Reactive"
    assert trigger["match"] == {"prefect.resource.id": "charhub.pitr.*"}


def test_weekly_verify_after_the_sunday_full():
    assert _schedule("pitr-verify")["cron"] == "30 3 * * 0"


@pytest.mark.parametrize("name", ["pitr-restore", "pitr-recover-table"])
def test_restore_and_recover_table_are_manual_dry_runs(name):
    dep = DEPLOYMENTS[name]
    assert not dep.get("schedules") and not dep.get("triggers")
    assert dep["parameters"]["dry_run"] is True
    flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
    assert inspect.signature(flow.fn).parameters["dry_run"].default is True  # the form's default too
