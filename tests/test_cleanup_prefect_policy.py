"""Pure: which flow runs of ours have expired (charhub_ops.cleanup.prefect_runs) and what the server's settings say
about its own vacuum (charhub_ops.cleanup.prefect_vacuum). No server, no clock."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from charhub_ops.cleanup.prefect_runs import RunInfo, RunPolicy, counts, delete_predicates, judge, judge_all
from charhub_ops.cleanup.prefect_vacuum import RECOMMENDED_ENV, describe, read_retention, retention_warning
from charhub_ops.errors import ConfigError

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
POLICY = RunPolicy()  # 30 days, failed/crashed 90 days


def run(state: str | None, ended_days_ago: float | None, rid: str = "r", deployment: str = "monitor") -> RunInfo:
    name = state.title() if state else None
    end = NOW - timedelta(days=ended_days_ago) if ended_days_ago is not None else None
    return RunInfo(id=rid, deployment_id=f"id-{deployment}", deployment=deployment, state_type=state,
                   state_name=name, end_time=end)


@pytest.mark.parametrize(("state", "days", "expired", "reason"), [
    ("COMPLETED", 31, True, "Completed and ended more than 30 days ago"),
    ("COMPLETED", 29, False, "ended within 30 days"),
    ("COMPLETED", 30, False, "ended within 30 days"),  # exactly at the cutoff: kept
    ("CANCELLED", 45, True, "Cancelled and ended more than 30 days ago"),
    ("FAILED", 45, False, "ended within 90 days"),
    ("FAILED", 91, True, "Failed and ended more than 90 days ago"),
    ("CRASHED", 89, False, "ended within 90 days"),
    ("CRASHED", 120, True, "Crashed and ended more than 90 days ago"),
    ("RUNNING", 400, False, "not finished (Running)"),
    ("SCHEDULED", 400, False, "not finished (Scheduled)"),
    ("PAUSED", 400, False, "not finished (Paused)"),
    ("PENDING", 400, False, "not finished (Pending)"),
    ("CANCELLING", 400, False, "not finished (Cancelling)"),
    (None, 400, False, "not finished (no state)"),
    ("COMPLETED", None, False, "no end time"),
])
def test_judge(state, days, expired, reason) -> None:
    verdict = judge(run(state, days), POLICY, NOW)
    assert (verdict.expired, verdict.reason) == (expired, reason)


def test_the_current_run_is_never_expired() -> None:
    assert judge(run("COMPLETED", 400, rid="me"), POLICY, NOW, current="me").reason == "the run doing the cleanup"
    assert judge(run("COMPLETED", 400, rid="other"), POLICY, NOW, current="me").expired


def test_judge_all_splits_every_run_once_with_a_reason_for_each_kept() -> None:
    runs = [run(s, d, rid=f"{s}-{d}") for s in ("COMPLETED", "FAILED", "RUNNING") for d in (1, 40, 100)]
    expired, kept = judge_all(runs, POLICY, NOW)
    gone, stay = {r.id for r in expired}, {v.run.id for v in kept}
    assert gone | stay == {r.id for r in runs} and not gone & stay and all(v.reason for v in kept)
    assert sorted(r.id for r in expired) == ["COMPLETED-100", "COMPLETED-40", "FAILED-100"]


def test_counts_per_deployment_and_state() -> None:
    runs = [run("COMPLETED", 40, "a"), run("COMPLETED", 50, "b"), run("FAILED", 99, "c"),
            run("COMPLETED", 40, "d", deployment="nightly-backup")]
    assert counts(runs) == [
        {"deployment": "monitor", "deployment_id": "id-monitor", "state": "Completed", "runs": 2},
        {"deployment": "monitor", "deployment_id": "id-monitor", "state": "Failed", "runs": 1},
        {"deployment": "nightly-backup", "deployment_id": "id-nightly-backup", "state": "Completed", "runs": 1}]


def test_delete_predicates_repeat_the_class_cutoff_in_chunks() -> None:
    runs = [run("COMPLETED", 40, f"c{i}") for i in range(5)] + [run("CRASHED", 100, "x"), run("FAILED", 100, "y")]
    predicates = delete_predicates(runs, POLICY, NOW, chunk=2)
    assert [p.ids for p in predicates] == [["c0", "c1"], ["c2", "c3"], ["c4"], ["x", "y"]]
    assert predicates[0].state_types == ["COMPLETED", "CANCELLED"]
    assert predicates[-1].state_types == ["FAILED", "CRASHED"]
    assert predicates[0].ended_before == NOW - timedelta(days=30)
    assert predicates[-1].ended_before == NOW - timedelta(days=90)
    assert delete_predicates([], POLICY, NOW, chunk=50) == []


@pytest.mark.parametrize(("days", "failed_days", "batch", "names"), [
    (60, 30, 200, "--failed-older-than-days"),
    (0.01, 90, 200, "--older-than-days"),
    (-1, 90, 200, "--older-than-days"),
    (30, 90, 0, "--batch-size"),
    (30, 90, 5000, "--batch-size"),
])
def test_bad_policy_is_one_config_error_naming_the_option(days, failed_days, batch, names) -> None:
    with pytest.raises(ConfigError, match=names):
        RunPolicy.from_days(days, failed_days, batch)


def test_policy_from_days() -> None:
    policy = RunPolicy.from_days(7, 7, 50)
    assert (policy.older_than, policy.failed_older_than, policy.batch_size) == (timedelta(days=7),) * 2 + (50,)


# --- the server's own vacuum, from the JSON Prefect's /admin/settings returns ------------------------------------

def _server_settings(monkeypatch, **env: str) -> dict:
    """What ``GET /api/admin/settings`` answers for a server started with ``env`` (Prefect's own serialisation)."""
    from prefect.settings import Settings

    for name in [n for n in list(os.environ) if n.startswith("PREFECT_SERVER_SERVICES_DB_VACUUM")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return json.loads(Settings().model_dump_json())


def test_default_server_keeps_flow_runs_forever(monkeypatch) -> None:
    retention = read_retention(_server_settings(monkeypatch))
    assert retention.known and retention.flow_runs is None and retention.vacuum == ["events"]
    assert retention.events == timedelta(days=7)
    assert retention.overrides == {"prefect.flow-run.heartbeat": timedelta(days=7)}
    warning = retention_warning(retention)
    assert "never deletes flow runs" in warning and "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED" in warning
    assert "events charhub.check.failed: no override" in "\n".join(describe(retention))


def test_recommended_server_settings_are_confirmed(monkeypatch) -> None:
    retention = read_retention(_server_settings(monkeypatch, **RECOMMENDED_ENV))
    assert retention.flow_runs == timedelta(days=90) and retention_warning(retention) is None
    assert retention.vacuum == ["events", "flow_runs", "orphans"]
    assert retention.overrides["charhub.check.failed"] == timedelta(days=3)
    lines = describe(retention)
    assert lines[0] == "server retention: flow runs 90 days, events 7 days"
    assert "  events charhub.check.failed: 3 days" in lines


@pytest.mark.parametrize(("enabled", "vacuum", "flow_runs"), [
    ("true", ["events", "flow_runs", "orphans"], True),  # the legacy boolean
    ("false", ["events"], False),
    ("orphans", ["orphans"], False),
])
def test_enabled_values_as_prefect_resolves_them(monkeypatch, enabled, vacuum, flow_runs) -> None:
    retention = read_retention(_server_settings(monkeypatch, PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED=enabled))
    assert retention.vacuum == vacuum and (retention.flow_runs is not None) == flow_runs


@pytest.mark.parametrize("settings", [None, {}, {"server": {"services": {}}}, {"server": "x"}])
def test_unreadable_settings_are_unknown_and_warned(settings) -> None:
    retention = read_retention(settings, "GET /admin/settings: HTTP 404" if settings is None else "")
    assert not retention.known
    assert retention_warning(retention).startswith("Prefect retention: cannot read the server's settings")
