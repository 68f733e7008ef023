"""The deploy guard's pure parts: the gate's streak logic (the clock is an argument), which checks belong to
a service, the record ↔ create body round trip, the releases kept in a repository, the manifest label."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from charhub_ops.backup.manifest import Manifest, manifest_key
from charhub_ops.deploy.gate import Gate, observe, run_gate, service_checks, verdict
from charhub_ops.deploy.record import create_body, from_inspect
from charhub_ops.deploy.releases import Guard, Release, label_backup, open_releases, pre_deploy_label
from charhub_ops.errors import ConfigError
from charhub_ops.monitoring.checks import CheckResult
from charhub_ops.monitoring.config import MonitorConfig
from charhub_ops.storage import MemoryStorage

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def results(**ok: bool) -> list[CheckResult]:
    return [CheckResult(cid, passed, "ok" if passed else "status 404 (expected 200)") for cid, passed in ok.items()]


def test_every_check_must_pass_n_times_in_a_row():
    gate = Gate(checks=["web", "api"], passes=3, timeout=60, started=T0)
    rounds = [dict(web=True, api=False), dict(web=True, api=True), dict(web=True, api=True),
              dict(web=False, api=True), dict(web=True, api=True), dict(web=True, api=True), dict(web=True, api=True)]
    seen = []
    for i, r in enumerate(rounds, 1):
        gate = observe(gate, results(**r), at(i))
        seen.append(verdict(gate, at(i)))
    assert seen == ["waiting"] * 6 + ["passed"]  # a failure resets the streak: web needs 3 more after round 4
    assert gate.streaks == {"web": 3, "api": 6} and gate.rounds == 7 and not gate.failing


def test_the_gate_fails_at_its_timeout_and_names_the_failing_checks():
    gate = observe(Gate(checks=["web"], passes=2, timeout=10, started=T0), results(web=True), at(5))
    assert verdict(gate, at(9.9)) == "waiting"
    assert verdict(gate, at(10)) == "failed"
    assert gate.failing == {"web": "ok"}  # one pass of two
    never = Gate(checks=["web"], passes=1, timeout=0, started=T0)
    assert never.failing == {"web": "never probed"} and verdict(never, T0) == "failed"


def test_run_gate_probes_round_after_round_on_its_clock():
    class Check:
        def __init__(self, cid):
            self.id = cid

    answers = iter([False, True, True, True])
    ticks = iter(at(s) for s in range(100))
    gate, outcome = run_gate([Check("web")], lambda c: CheckResult(c.id, next(answers), "x"), passes=3,
                             timeout=30, interval=0, clock=lambda: next(ticks), sleep=lambda s: None)
    assert outcome == "passed" and gate.rounds == 4 and gate.streaks == {"web": 3}
    ticks = iter(at(s * 10) for s in range(100))
    gate, outcome = run_gate([Check("web")], lambda c: CheckResult(c.id, False, "down"), passes=1, timeout=25,
                             interval=0, clock=lambda: next(ticks), sleep=lambda s: None)
    assert outcome == "failed" and gate.failing == {"web": "down"}


def test_a_service_needs_an_http_check_and_checks_belong_to_their_container():
    cfg = MonitorConfig.model_validate({"checks": [
        {"id": "web-health", "type": "http", "url": "http://x/health", "container": "web"},
        {"id": "web", "type": "container"},                         # no container: its id names it
        {"id": "web-logs", "type": "log_errors", "container": "web"},
        {"id": "api-box", "type": "container", "container": "api"},
        {"id": "disk", "type": "disk"}]})
    assert {s: [c.id for c in cs] for s, cs in service_checks(cfg, ["web"]).items()} == {
        "web": ["web-health", "web", "web-logs"]}
    with pytest.raises(ConfigError, match="no http check names the container api"):
        service_checks(cfg, ["web", "api"])


INSPECT = {
    "Id": "abcdef0123456789" * 4, "Name": "/web", "Image": "sha256:" + "1" * 64,
    "Config": {"Hostname": "abcdef012345", "Image": "svc:v1", "Env": ["A=1", "TOKEN=secret"], "Cmd": ["httpd"],
               "Entrypoint": None, "User": "", "WorkingDir": "", "Labels": {"l": "v"}, "Tty": False,
               "Healthcheck": {"Test": ["CMD", "true"]}, "ExposedPorts": {"8080/tcp": {}}},
    "HostConfig": {"Binds": ["data:/data:rw"], "PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": "80"}]},
                   "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}, "NetworkMode": "net",
                   "Init": True, "Memory": 0},
    "Mounts": [{"Type": "volume", "Name": "data", "Destination": "/data"},
               {"Type": "volume", "Name": "anon123", "Destination": "/cache"}],
    "NetworkSettings": {"Networks": {"net": {"Aliases": ["web", "abcdef012345"], "IPAMConfig": None},
                                     "other": {"Aliases": None, "IPAMConfig": {"IPv4Address": "10.0.0.9"}}}},
}


def test_record_keeps_the_configuration_and_the_body_recreates_it():
    record = from_inspect(INSPECT, T0)
    assert (record.service, record.tag, record.hostname, record.volumes()) == ("web", "svc:v1", None,
                                                                               ["anon123", "data"])
    assert record.networks["net"].aliases == ["web"] and record.networks["other"].ipv4_address == "10.0.0.9"
    assert record.summary()["env_names"] == ["A", "TOKEN"] and "secret" not in str(record.summary())
    body, later = create_body(record, "svc:v1")
    assert body["Image"] == "svc:v1" and "Hostname" not in body and body["Tty"] is False
    assert body["HostConfig"]["Init"] is True and body["HostConfig"]["Binds"] == ["data:/data:rw", "anon123:/cache"]
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"net": {"Aliases": ["web"], "Links": None,
                                                                    "IPAMConfig": None}}}
    assert later == {"other": {"Aliases": None, "Links": None, "IPAMConfig": {"IPv4Address": "10.0.0.9"}}}


def test_releases_live_under_deploy_in_the_repository():
    storage = MemoryStorage("repo")
    releases = open_releases(storage)
    record = from_inspect(INSPECT, T0)
    key = releases.save_record(record)
    assert releases.record(key) == record
    assert any(o.key == f"deploy/{key}.json" for o in storage.list("deploy/"))
    assert releases.last_good("web") is None
    releases.set_last_good(Release(service="web", record_key=key, image_id=record.image_id, tag="svc:v1", at=T0,
                                   why="test"))
    assert releases.last_good("web").record_key == key
    releases.save_guard(Guard(release="v2", label="pre-deploy-v2", at=T0, services=["web", "api"], records={}))
    assert releases.guard("api").label == "pre-deploy-v2"
    with pytest.raises(ConfigError, match="missing"):
        releases.record("record/web/nope")


def test_label_is_added_to_a_manifest_written_without_one():
    storage = MemoryStorage("repo")
    old = {"backup_id": "20261130T020000Z-ab12", "database": "charhub_db", "server_version": "16.4",
           "server_version_num": 160004, "pg_dump_version": "16.4", "dump_method": "docker",
           "started_at": "2026-11-30T02:00:00Z", "finished_at": "2026-11-30T02:01:00Z", "database_size_bytes": 1,
           "raw_size_bytes": 1, "stored_size_bytes": 1, "sha256": "0" * 64, "tool_version": "0.1",
           "dump": {"key": "k", "size_bytes": 1, "sha256": "0" * 64}}
    key = manifest_key("charhub_db", old["backup_id"])
    storage.put_bytes(key, json.dumps(old).encode())
    assert Manifest.model_validate_json(storage.get_bytes(key)).label is None  # old manifests still load
    label_backup(storage, "charhub_db", old["backup_id"], pre_deploy_label("v2.1 (hotfix)/x"))
    assert Manifest.model_validate_json(storage.get_bytes(key)).label == "pre-deploy-v2.1-hotfix-x"
