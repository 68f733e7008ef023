"""The cleanup flow's ``prefect`` part on the real Prefect test server: old flow runs of charhub-ops deployments go,
in batches, after a dry run that only counts; newer runs, failed runs within their longer period, runs that are not
terminal and runs of deployments that are not ours stay. Also what ``status`` says about the server's own vacuum."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from charhub_ops.cli import app
from tests.test_backup_flow import _wait_for_event
from tests.test_migrate_flow import _latest_artifact


def _deployment(client, flow_name: str, name: str, tags: list[str]):
    flow_id = client.create_flow_from_name(flow_name)
    return client.create_deployment(flow_id=flow_id, name=name, tags=tags)


def _run(client, deployment_id, final, days_ago: float):
    """A flow run of ``deployment_id`` that started ``days_ago`` days ago and (with ``final``) ended a minute later.
    The API stamps states with the server's clock, so the run is aged in the server's own (SQLite) database."""
    from prefect.states import Running

    run = client.create_flow_run_from_deployment(deployment_id)
    client.set_flow_run_state(run.id, Running(), force=True)
    if final is not None:
        client.set_flow_run_state(run.id, final(), force=True)
    _age(run.id, days_ago)
    return run.id


def _age(run_id, days_ago: float) -> None:
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    path = PREFECT_SERVER_DATABASE_CONNECTION_URL.value().removeprefix("sqlite+aiosqlite:///")
    start = datetime.now(UTC) - timedelta(days=days_ago)
    stamp = lambda t: t.strftime("%Y-%m-%d %H:%M:%S.%f")  # noqa: E731 (the server's SQLite timestamp format)
    with sqlite3.connect(path, timeout=30) as db:
        changed = db.execute("UPDATE flow_run SET expected_start_time = ?, start_time = ?, "
                             "end_time = CASE WHEN end_time IS NULL THEN NULL ELSE ? END WHERE id = ?",
                             (stamp(start), stamp(start), stamp(start + timedelta(minutes=1)), str(run_id))).rowcount
    assert changed == 1


@pytest.fixture
def runs(prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Completed, Crashed, Failed

    with get_client(sync_client=True) as client:
        ours = _deployment(client, "retention-test-monitor", "monitor", ["charhub-ops", "monitoring"])
        foreign = _deployment(client, "someone-elses-flow", "nightly", [])
        same_name_untagged = _deployment(client, "someone-elses-monitor", "monitor", [])
        made = {
            "old_completed": _run(client, ours, Completed, 40),
            "old_completed_2": _run(client, ours, Completed, 35),
            "old_cancelled": _run(client, ours, Cancelled, 45),
            "new_completed": _run(client, ours, Completed, 10),
            "failed_within": _run(client, ours, Failed, 40),
            "crashed_old": _run(client, ours, Crashed, 100),
            "failed_old": _run(client, ours, Failed, 120),
            "running_old": _run(client, ours, None, 40),
            "foreign_old": _run(client, foreign, Completed, 40),
            "foreign_name_old": _run(client, same_name_untagged, Completed, 40),
        }
    return ours, made


def _exists(ids) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    out = {}
    with get_client(sync_client=True) as client:
        for name, run_id in ids.items():
            try:
                client.read_flow_run(run_id)
                out[name] = True
            except ObjectNotFound:
                out[name] = False
    return out


def _expired_of(summary: dict, deployment_id) -> dict:
    return {(c["state"]): c["runs"] for c in summary["prefect"]["expired"] if c["deployment_id"] == str(deployment_id)}


def test_dry_run_counts_then_old_runs_of_ours_go(prefect_server, runs):
    ours, made = runs
    dry = CliRunner().invoke(app, ["cleanup", "prefect", "--dry-run", "--json", "--batch-size", "2"])
    assert dry.exit_code == 0, dry.output
    summary = json.loads(dry.stdout)
    assert summary["dry_run"] is True and summary["parts"] == ["prefect"]
    assert _expired_of(summary, ours) == {"Completed": 2, "Cancelled": 1, "Crashed": 1, "Failed": 1}
    assert all(_exists(made).values())  # a dry run deletes nothing
    assert "| monitor | Completed | 2 | — |" in _latest_artifact(prefect_server, "cleanup-preview")
    human = CliRunner().invoke(app, ["cleanup", "prefect", "--dry-run"])
    assert human.exit_code == 0 and "monitor Failed: would delete 1" in human.output, human.output

    from flows.cleanup import cleanup_flow

    started = datetime.now(UTC)
    done = cleanup_flow(parts=["prefect"], prefect_batch_size=2)
    assert _exists(made) == {"old_completed": False, "old_completed_2": False, "old_cancelled": False,
                             "new_completed": True, "failed_within": True, "crashed_old": False,
                             "failed_old": False, "running_old": True, "foreign_old": True,
                             "foreign_name_old": True}
    # 3 completed/cancelled in rounds of 2 (2 requests), 2 failed/crashed (1 request)
    assert (done["prefect_done"]["deleted_total"], done["prefect_done"]["batches"]) == (5, 3)
    assert _expired_of({"prefect": {"expired": done["prefect_done"]["deleted"]}}, ours) == {
        "Completed": 2, "Cancelled": 1, "Crashed": 1, "Failed": 1}
    event = _wait_for_event(prefect_server, "charhub.cleanup.completed", "charhub.cleanup", since=started)
    assert event["payload"]["prefect_runs_deleted"] == 5
    assert event["payload"]["prefect_runs"] == done["prefect_done"]["deleted"]
    assert "| monitor |" in _latest_artifact(prefect_server, "cleanup-report")

    again = cleanup_flow(parts=["prefect"], dry_run=True)
    assert _expired_of(again, ours) == {}


def test_bad_periods_are_one_line(prefect_server):
    result = CliRunner().invoke(app, ["cleanup", "prefect", "--older-than-days", "60",
                                      "--failed-older-than-days", "30", "--dry-run"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--failed-older-than-days" in result.output


def test_status_warns_when_the_server_keeps_flow_runs_forever(prefect_server):
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED" in line]
    assert len(warnings) == 1 and "flow_runs" in warnings[0]
    from deployments.setup import server_retention

    retention = server_retention()  # what setup reports: the test server runs with Prefect's defaults
    assert retention.known and retention.vacuum == ["events"] and retention.flow_runs is None


def test_the_delete_repeats_the_predicate_on_the_server(prefect_server):
    """A run read as expired but retried before the delete (back to Running) is not deleted."""
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    from charhub_ops.cleanup.prefect_runs import RunInfo, RunPolicy, delete_predicates
    from tasks.cleanup_prefect import _delete

    with get_client(sync_client=True) as client:
        ours = _deployment(client, "retention-recheck", "monitor", ["charhub-ops"])
        made = {"retried": _run(client, ours, Completed, 40), "expired": _run(client, ours, Completed, 41)}
        now = datetime.now(UTC)
        read = [RunInfo(id=str(i), deployment_id=str(ours), deployment="monitor", state_type="COMPLETED",
                        state_name="Completed", end_time=now - timedelta(days=40)) for i in made.values()]
        (predicate,) = delete_predicates(read, RunPolicy(), now, chunk=50)
        client.set_flow_run_state(made["retried"], Running(), force=True)  # e.g. retried from the UI
        assert _delete(client, predicate) == {str(made["expired"])}
    assert _exists(made) == {"retried": True, "expired": False}
