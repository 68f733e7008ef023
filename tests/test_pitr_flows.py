"""The pgBackRest flows on the session Prefect server and a real cluster archiving through pgBackRest (issue 19):
the backup flow's artifact and ``charhub.pitr.backup.completed`` (read back from the server's event store), a
failing backup's ``charhub.pitr.backup.failed`` without retries, and expire's mapping and report."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from tests.harness.pitr import start_archiving_cluster
from tests.test_backup_flow import _wait_for_event

PASSPHRASE = "flows-" + uuid.uuid4().hex  # the repository's cipher passphrase (a secret)


def _artifact(key: str, flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return artifact.data


def _task_runs(flow_run_id, name: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                     task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name)))


@pytest.fixture(scope="module")
def cluster():
    cluster = start_archiving_cluster(f"flows{uuid.uuid4().hex[:6]}")
    yield cluster
    cluster.remove()


@pytest.fixture
def pitr_env(cluster, prefect_server, monkeypatch, tmp_path):
    """The cluster's settings (local pgBackRest, posix repository) with the stanza set up."""
    from charhub_ops.settings import load_settings
    from tasks.pitr import pitr_setup, resolve_pitr_config

    for name, value in cluster.settings_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CHARHUB_OPS_PITR_CIPHER_PASS", PASSPHRASE)
    monkeypatch.setenv("CHARHUB_OPS_REPOSITORY", f"file://{tmp_path}/logical")
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRY_DELAY", "0.1")
    cfg = resolve_pitr_config.fn(load_settings(), None)
    pitr_setup.fn(cfg)  # idempotent: once per module in effect
    return cluster


def test_full_backup_flow_reports_and_emits_completed(pitr_env, prefect_server):
    from flows.pitr import pitr_backup_flow

    since = datetime.now(UTC)
    state = pitr_backup_flow(kind="full", return_state=True)
    summary = state.result()
    info = json.loads(pitr_env.pgbackrest("info", "--output=json").stdout)
    newest = info[0]["backup"][-1]
    assert summary["label"] == newest["label"] and summary["type"] == "full" and newest["type"] == "full"
    assert summary["size_bytes"] == newest["info"]["size"] > 0 and summary["repository_size_bytes"] > 0
    assert summary["wal_start"] == newest["archive"]["start"] and summary["duration_seconds"] >= 0
    event = _wait_for_event(prefect_server, "charhub.pitr.backup.completed", f"charhub.pitr.{pitr_env.stanza}",
                            since)
    assert event["payload"]["label"] == summary["label"]
    assert event["payload"]["repository_size_bytes"] == summary["repository_size_bytes"]
    report = _artifact("pitr-backup-report", state.state_details.flow_run_id)
    assert summary["label"] in report and summary["wal_start"] in report and "| full |" in report


def test_a_repository_refusing_writes_fails_the_backup_at_once_and_emits_failed(pitr_env, prefect_server,
                                                                               monkeypatch):
    """info still reads the repository, the backup cannot write into it: a permanent error, not retried."""
    from flows.pitr import pitr_backup_flow

    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRIES", "2")  # a transient error would be tried 3 times
    since = datetime.now(UTC)
    backups = pitr_env.repo / "backup" / pitr_env.stanza
    backups.chmod(0o555)  # pgBackRest runs as postgres: it can list, not write
    try:
        state = pitr_backup_flow(kind="incr", return_state=True)
    finally:
        backups.chmod(0o750)
    assert state.is_failed()
    event = _wait_for_event(prefect_server, "charhub.pitr.backup.failed", f"charhub.pitr.{pitr_env.stanza}", since)
    error = event["payload"]["error"]
    assert event["payload"]["requested"] == "incr" and "\n" not in error and error.startswith("PgBackRestError: ")
    assert PASSPHRASE not in json.dumps(event)
    (run,) = _task_runs(state.state_details.flow_run_id, "pitr-backup")
    assert run.run_count == 1 and run.state.is_failed()  # permanent: failed at once, no retry


def test_missing_stanza_is_one_line_naming_setup(pitr_env, prefect_server, monkeypatch):
    from flows.pitr import pitr_backup_flow

    monkeypatch.setenv("CHARHUB_OPS_PITR_STANZA", "nosuchstanza")
    since = datetime.now(UTC)
    state = pitr_backup_flow(return_state=True)
    assert state.is_failed()
    event = _wait_for_event(prefect_server, "charhub.pitr.backup.failed", "charhub.pitr.nosuchstanza", since)
    assert "pitr setup" in event["payload"]["error"] and "nosuchstanza" in event["payload"]["error"]


def test_diff_after_full_and_expire_prints_the_mapping(pitr_env, prefect_server):
    from flows.pitr import pitr_backup_flow, pitr_expire_flow

    diff = pitr_backup_flow(kind="diff")
    assert diff["type"] == "diff" and diff["prior"]
    state = pitr_expire_flow(dry_run=False, return_state=True)
    out = state.result()
    assert out["retention"]["repo1-retention-full"] == "4" and out["retention"]["repo1-retention-diff"] == "7"
    assert diff["label"] in out["kept"] and out["expired"] == []
    report = _artifact("pitr-expire-report", state.state_details.flow_run_id)
    assert "repo1-retention-full" in report and "0 backup(s) expired" in report


def test_backups_list_and_capacity_show_both_kinds(pitr_env, prefect_server, tmp_path):
    """After a physical full (above) and one logical backup: ``backups list`` lists both, with their kind, and
    the capacity report has pgBackRest's repository size and backup count beside the logical repository."""
    from flows.pitr import pitr_backup_flow
    from tests.test_cli import run_cli

    full = pitr_backup_flow(kind="full")
    repo = f"file://{tmp_path}/logical"
    api = {"PREFECT_API_URL": prefect_server, "COLUMNS": "240"}
    logical = run_cli("backup", "--database-url", pitr_env.url(), "--to", repo, "--json", env=api)
    assert logical.returncode == 0, logical.stderr
    listed = run_cli("backups", "list", "--from", repo, "--json")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    rows = json.loads(listed.stdout)
    kinds = {r["kind"] for r in rows}
    physical = [r for r in rows if r["kind"] == "physical"]
    assert kinds == {"logical", "physical"} and full["label"] in [r["backup_id"] for r in physical]
    assert all(r["database"] == f"cluster:{pitr_env.stanza}" and r["encrypted"] for r in physical)
    table = run_cli("backups", "list", "--from", repo, env=api)
    assert f"│ physical │ {full['label']} " in table.stdout and "│ logical  │" in table.stdout, table.stdout
    capacity = run_cli("capacity", "--from", repo, "--json", "--chart", str(tmp_path / "c.png"))
    assert capacity.returncode == 0, capacity.stderr
    report = json.loads(capacity.stdout)
    assert report["pitr"]["backups"] == len(physical) and report["pitr"]["repository_size_bytes"] > 0
    assert report["pitr"]["by_type"]["full"] >= 1 and report["databases"]  # the logical repository too
    markdown = run_cli("capacity", "--from", repo, "--chart", str(tmp_path / "c.png"), env=api)
    assert "physical backups (pgBackRest)" in markdown.stdout, markdown.stdout
