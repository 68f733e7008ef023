"""Rollback safety against the real Docker engine (issue 16, items 11-14): two rollbacks at once, all or
none across services, a failure half-way through parking, the last-good image pinned against the Docker
cleanup, release records encrypted with the backup recipients.

Fixtures, images and the monitor config: tests/harness/service_images.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import pytest
from pyrage import x25519

from charhub_ops.cleanup.docker_host import execute_docker, plan_docker, scan_docker
from charhub_ops.deploy.releases import open_releases
from charhub_ops.errors import ConfigError, DockerError
from charhub_ops.monitoring.store import repository_state
from charhub_ops.settings import load_settings
from charhub_ops.storage import open_storage
from flows.deploy import pre_deploy_flow, rollback_flow
from tests.harness.service_images import (
    V1,
    V2,
    build_image,
    comparable,
    configure,
    deploy_env_fixture,  # noqa: F401 - fixture
    new_service,
    service_fixture,  # noqa: F401 - fixture
)

ROOT = Path(__file__).resolve().parent.parent


def _replaced(service) -> list[str]:
    return [c.name for c in service.client.containers.list(all=True, filters={"name": service.name})
            if "-replaced-" in c.name]


def test_two_rollbacks_at_once_end_on_last_good_and_the_second_changes_nothing(service, deploy_env, tmp_path,
                                                                                monkeypatch, prefect_server):
    """`deploy post || rollback` and the gate-failed deployment start together: one lock per service."""
    configure(service, tmp_path, monkeypatch)
    good = service.inspect()["Image"]
    pre_deploy_flow(services=[service.name], backup=False)
    service.run(V2)
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    cli = str(Path(sys.executable).with_name("charhub-ops"))
    procs = [subprocess.Popen([cli, "rollback", "--service", service.name, "--json", "--reason", f"race {i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(out) for out, _ in outs]
    assert sorted(r["already_on_last_good"] for r in results) == [False, True], results
    (idle,) = [r for r in results if r["already_on_last_good"]]
    assert idle["services"][0]["healthy"] and idle["incident_id"] is None
    after = service.inspect()
    assert after["Image"] == good and after["State"]["Running"] and service.answers() == 200
    assert len(_replaced(service)) == 1  # one rollback parked the broken release; the other touched nothing
    assert any("already on last-good" in err for _, err in outs)
    print(f"two rollbacks at once: {[r['seconds'] for r in results]} s (already on last-good: "
          f"{[r['already_on_last_good'] for r in results]})")


def test_a_failure_between_rename_and_update_leaves_the_service_under_its_name(service, monkeypatch):
    from charhub_ops.deploy.record import from_inspect
    from charhub_ops.deploy.recreate import recreate

    before = service.inspect()
    record = from_inspect(before, datetime.now(UTC))

    real, failures = docker.models.containers.Container.update, []

    def update_failing_once(self, **kwargs):  # the engine refuses the parking's policy update once
        if not failures:
            failures.append(kwargs)
            raise docker.errors.APIError("injected: update failed")
        return real(self, **kwargs)

    monkeypatch.setattr(docker.models.containers.Container, "update", update_failing_once)
    with pytest.raises(DockerError, match="injected"):
        recreate(service.client, record, V1, datetime.now(UTC))
    monkeypatch.undo()
    after = service.inspect()
    assert after["Id"] == before["Id"] and after["State"]["Running"]
    assert _replaced(service) == [] and service.answers() == 200


def test_a_multi_service_rollback_failing_on_the_second_puts_both_back_and_reports(service, deploy_env, tmp_path,
                                                                                   monkeypatch):
    other = new_service(service.client)
    try:
        check = {"type": "http", "timeout": 2, "latency_budget_ms": 2000, "threshold": 1}
        from tests.harness.monitor import write_config
        config = write_config(tmp_path, [{**check, "id": f"web-{s.name[-8:]}", "url": s.url, "container": s.name}
                                         for s in (service, other)])
        monkeypatch.setenv("CHARHUB_OPS_MONITOR_CONFIG", config)
        pre_deploy_flow(services=[service.name, other.name], backup=False)
        releases = open_releases(open_storage(deploy_env))
        good = releases.last_good(other.name)
        record = releases.record(good.record_key)
        broken = record.model_copy(update={"network_mode": "charhub-ops-no-such-net", "networks": {
            "charhub-ops-no-such-net": record.networks[other.network]}})
        releases.set_last_good(good.model_copy(update={"record_key": releases.save_record(broken)}))
        service.run(V2)
        other.run(V2)
        deployed = {s.name: s.inspect()["Id"] for s in (service, other)}
        with pytest.raises(DockerError, match="create"):
            rollback_flow(services=[service.name, other.name], reason="gate failed")
        for s in (service, other):  # none rolled back: each is its deployed container again, running
            after = s.inspect()
            assert after["Id"] == deployed[s.name] and after["State"]["Running"], s.name
            assert _replaced(s) == [], s.name
        (inc,) = [i for i in repository_state(load_settings(), None, False).incidents() if i.check_id == "deploy"]
        assert inc.status == "escalated" and "put back" in inc.timeline[-2].what + inc.timeline[-1].what
        report = Path(inc.report).read_text()
        assert "FAILED" in report and service.name in report and other.name in report
    finally:
        other.remove()


def test_a_same_tag_rebuild_then_docker_cleanup_then_rollback_succeeds(service, deploy_env, tmp_path, monkeypatch):
    """compose up --build re-tags: the last-good image is dangling but for its pin, and the cleanup keeps it."""
    from charhub_ops.deploy.releases import protected_images

    scope = uuid.uuid4().hex[:10]
    labels = {"charhub-ops-test-pin": scope}
    tag = f"charhub-ops-svc:same-{scope}"
    good = build_image(service.client, tag, f"good-{scope}", healthy=True, labels=labels)
    service.run(tag)
    configure(service, tmp_path, monkeypatch)
    try:
        pre_deploy_flow(services=[service.name], backup=False, release="r1")
        bad = build_image(service.client, tag, f"bad-{scope}", healthy=False, labels=labels)
        assert bad != good
        service.run(tag)
        later = datetime.now(UTC) + timedelta(days=3)
        storage = open_storage(deploy_env)
        plan = plan_docker(scan_docker(service.client), later, timedelta(hours=1),
                           scope_label=f"charhub-ops-test-pin={scope}", protected=protected_images(storage))
        assert good not in [i.id for i in plan.images]
        pins = [t for t in service.client.images.get(good).tags if t.startswith("charhub-ops/last-good-")]
        assert pins == [f"charhub-ops/last-good-{service.name}:{good.split(':')[1][:12]}"], pins
        assert protected_images(storage)[good] == f"last-good of {service.name} ({tag})"  # pin or not
        result = execute_docker(plan, service.client)
        assert good not in result.removed_images and not result.warnings
        out = rollback_flow(services=[service.name], reason="gate failed")
        assert out["services"][0]["healthy"] and service.inspect()["Image"] == good
    finally:
        service.remove()
        for image in (tag, good):
            try:
                service.client.images.remove(image, force=True)
            except docker.errors.ImageNotFound:
                pass


def test_records_are_encrypted_with_the_backup_recipients_and_rollback_decrypts_them(service, deploy_env,
                                                                                     tmp_path, monkeypatch):
    identity = x25519.Identity.generate()
    (tmp_path / "age.key").write_text(f"{identity}\n")
    monkeypatch.setenv("CHARHUB_OPS_ENCRYPT_TO", str(identity.to_public()))
    monkeypatch.delenv("CHARHUB_OPS_AGE_IDENTITY_FILE", raising=False)
    configure(service, tmp_path, monkeypatch)
    original = service.inspect()
    pre_deploy_flow(services=[service.name], backup=False)
    stored = [p for p in (tmp_path / "repo" / "deploy").rglob("*") if p.is_file()]
    assert any("record" in p.parts for p in stored)
    for path in stored:
        assert b"t0ken" not in path.read_bytes(), path
    service.run(V2)
    deployed = service.inspect()["Id"]
    with pytest.raises(ConfigError, match="CHARHUB_OPS_AGE_IDENTITY_FILE"):
        rollback_flow(services=[service.name])
    assert service.inspect()["Id"] == deployed  # refused before anything changed
    monkeypatch.setenv("CHARHUB_OPS_AGE_IDENTITY_FILE", str(tmp_path / "age.key"))
    out = rollback_flow(services=[service.name])
    assert out["services"][0]["healthy"]
    before, now = comparable(original), comparable(service.inspect())
    assert [k for k in sorted(before) if before[k] != now.get(k)] == []  # env included: API_TOKEN=t0ken is back
    assert "t0ken" not in Path(out["report"]).read_text()


def test_the_cleanup_flow_keeps_a_dangling_image_a_last_good_record_names(service, deploy_env):
    """Through the cleanup flow (dry run: the shared engine is not pruned): an unpinned last-good image
    (recorded before pins existed) left dangling by a same-tag rebuild is kept, with the reason."""
    from charhub_ops.deploy.record import from_inspect
    from charhub_ops.deploy.releases import Release
    from flows.cleanup import cleanup_flow

    scope = uuid.uuid4().hex[:10]
    tag = f"charhub-ops-svc:unpinned-{scope}"
    old = build_image(service.client, tag, f"old-{scope}", healthy=True)
    try:
        service.run(tag)
        record = from_inspect(service.inspect(), datetime.now(UTC))
        releases = open_releases(open_storage(deploy_env))
        releases.set_last_good(Release(service=service.name, record_key=releases.save_record(record),
                                       image_id=old, tag=tag, at=record.recorded_at, why="recorded by hand"))
        service.run(V1)
        build_image(service.client, tag, f"new-{scope}", healthy=True)  # `old` is dangling now, and unused
        summary = cleanup_flow(parts=["docker"], dry_run=True)
        assert old not in [i["id"] for i in summary["docker"]["images"]]
        assert f"image {old[:19]}: last-good of {service.name} ({tag})" in summary["docker"]["kept"]
    finally:
        for image in (tag, old):
            try:
                service.client.images.remove(image, force=True)
            except docker.errors.ImageNotFound:
                pass


@pytest.mark.parametrize(("service", "repository"), [
    ("charhub-backend-1", "charhub-ops/last-good-charhub-backend-1"),
    ("CharHub_Backend.1", "charhub-ops/last-good-charhub-backend-1"),
    ("__", "charhub-ops/last-good-service"),
])
def test_pin_repository_is_a_valid_image_name(service, repository):
    from charhub_ops.deploy.pins import pin_repository

    assert pin_repository(service) == repository


def test_deploy_post_waits_for_the_service_lock(service, deploy_env, tmp_path, monkeypatch):
    """While another run holds service-<name>, post probes nothing; released, it runs its gate."""
    import threading
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter
    from prefect.client.schemas.sorting import FlowRunSort

    from flows.deploy import post_deploy_flow
    from tasks.locks import resource_lock

    configure(service, tmp_path, monkeypatch)
    results: list = []
    with resource_lock("service", service.name):
        worker = threading.Thread(target=lambda: results.append(post_deploy_flow(services=[service.name])))
        worker.start()
        with get_client(sync_client=True) as client:
            run = None
            while run is None:  # the post run exists (it has started)...
                newest = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=50)
                runs = [r for r in newest if r.parameters.get("services") == [service.name]]
                run = runs[0] if runs else None
                time.sleep(0.2)
            for _ in range(25):  # ...and for 5 s more it has run no task: it waits for the lock
                only = TaskRunFilter(flow_run_id={"any_": [run.id]})
                assert client.read_task_runs(task_run_filter=only) == [], "post ran while the lock was held"
                time.sleep(0.2)
    worker.join(timeout=300)
    assert results and results[0]["healthy"]
