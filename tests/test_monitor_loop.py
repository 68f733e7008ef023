"""The long-running monitor (charhub_ops.monitoring.loop) against the real Prefect test server: a fake clock
drives ten probes of a real HTTP endpoint that fails for four of them — one ``down`` and one ``recovered``
reach the server's event store, the state is saved on transitions only, the latest-pass artifact is one row
updated in place; the ``monitor`` flow's window mode makes no task run per probe."""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

from charhub_ops.monitoring.config import load_config
from charhub_ops.monitoring.loop import HEARTBEAT_EVENT, Monitor
from charhub_ops.settings import load_settings
from tasks.monitor import LatestArtifact, open_state, prefect_sinks

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def target():
    """A local HTTP endpoint answering 200, or 500 while ``state['fail']``."""
    state = {"fail": False}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(500 if state["fail"] else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_port}/health"
    server.shutdown()
    server.server_close()


def _config(tmp_path, check: dict, **extra) -> str:
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump({"checks": [check], **extra}))
    return str(path)


def _events(api: str, resource: str, expected: int) -> list[str]:
    """Event names about ``resource`` in the server's store, once ``expected`` arrived (written asynchronously)."""
    body = {"filter": {"resource": {"id": [resource]}, "order": "ASC"}, "limit": 50}
    deadline = time.monotonic() + 30
    while True:
        names = [e["event"] for e in httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"]]
        if len(names) >= expected or time.monotonic() > deadline:
            time.sleep(0.5)  # a late duplicate would show up now
            return [e["event"] for e in httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"]]
        time.sleep(0.3)


def test_an_outage_is_down_once_and_recovered_once_across_passes(prefect_server, target, tmp_path):
    flag, url = target
    cid = f"loop-{uuid.uuid4().hex[:6]}"
    cfg = load_config(_config(tmp_path, {"id": cid, "type": "http", "url": url, "interval": "30s", "threshold": 2,
                                         "recovery_threshold": 2, "timeout": 2}, heartbeat_every="5m"))
    settings = load_settings()
    store = open_state(settings, "prefect")
    saves, emitted, clock = [], [], {"t": T0}
    real_save = store.save_check
    store.save_check = lambda state: (saves.append(clock["t"]), real_save(state))
    sinks = prefect_sinks(cfg, settings)
    real_emit = sinks.emit
    sinks.emit = lambda event, resource, payload: (emitted.append(event), real_emit(event, resource, payload))
    key = f"monitor-test-{uuid.uuid4().hex[:6]}"
    sinks.publish = LatestArtifact(key).publish

    def sleep(seconds: float) -> None:  # the fake clock: the endpoint fails from 60 s to 150 s
        clock["t"] += timedelta(seconds=seconds)
        flag["fail"] = 60 <= (clock["t"] - T0).total_seconds() < 180

    ticks = Monitor(cfg, store, sinks).run(lambda: clock["t"], sleep, until=T0 + timedelta(seconds=300))
    assert ticks == 10
    names = _events(prefect_server, f"charhub.check.{cid}", 6)
    assert names.count("charhub.service.down") == 1 and names.count("charhub.service.recovered") == 1
    assert names.count("charhub.check.failed") == 4 and len(names) == 6
    assert emitted.count(HEARTBEAT_EVENT) == 1  # at the start; the next is due at 300 s
    # transitions only (240: the outage's first-failure time is cleared once up), not 120, 150, 270, and not
    # at the window's end either (saved 30 s ago: each save is a prefect.variable.updated event)
    assert [(t - T0).total_seconds() for t in saves] == [0, 30, 60, 90, 180, 210, 240]
    assert store.check(cid).status == "up" and len(store.check(cid).probes) == 9
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert len(artifacts) == 1  # one row, updated in place
    assert f"| {cid} | up | 0 |" in artifacts[0].data and "status 500" in artifacts[0].data


def test_the_flow_window_probes_without_task_runs_and_keeps_one_artifact(prefect_server, target, tmp_path):
    from flows.monitor import monitor_flow
    from tasks.monitor import ARTIFACT_KEY

    cid = f"win-{uuid.uuid4().hex[:6]}"
    config = _config(tmp_path, {"id": cid, "type": "http", "url": target[1], "interval": 0.3})
    states = [monitor_flow(config=config, window_seconds=1, return_state=True) for _ in range(2)]
    (row,) = states[-1].result()
    assert row["id"] == cid and row["state"] == "up"
    with get_client(sync_client=True) as client:
        runs = [s.state_details.flow_run_id for s in states]
        assert client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs))) == []
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY])))
    assert len(artifacts) == 1 and cid in artifacts[0].data
    assert "charhub.monitor.heartbeat" in _events(prefect_server, "charhub.monitor", 1)


def test_monitor_run_stops_on_sigterm_with_every_state_saved(prefect_server, target, tmp_path):
    """``charhub-ops monitor run`` as a systemd unit runs it: SIGTERM ends it with exit 0 after the flush (the
    passing check's probes, never a transition, are saved then)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    cid = f"svc-{uuid.uuid4().hex[:6]}"
    config = _config(tmp_path, {"id": cid, "type": "http", "url": target[1], "interval": "1s"})
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "CHARHUB_OPS_MONITOR_STATE": "prefect"}
    cli = Path(sys.executable).parent / "charhub-ops"
    proc = subprocess.Popen([str(cli), "monitor", "run", "--config", config], env=env, stderr=subprocess.PIPE,
                            text=True)
    assert "monitoring 1 checks" in proc.stderr.readline()
    time.sleep(2.5)  # a few probes
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert "stopped" in proc.stderr.read()
    state = open_state(load_settings(), "prefect").check(cid)
    assert state.status == "up" and len(state.probes) >= 2


class _Dict:
    """An in-memory StateStore."""

    def __init__(self) -> None:
        self.data: dict[str, dict] = {}

    def get(self, key):
        return self.data.get(key)

    def put(self, key, value):
        self.data[key] = value

    def delete(self, key):
        self.data.pop(key, None)

    def keys(self, prefix):
        return [k for k in self.data if k.startswith(prefix)]


def test_a_window_end_saves_only_checks_unsaved_for_six_hours(tmp_path):
    """A passing check writes nothing at a window's end unless its stored probes are 6 h old (each write is a
    Variable update, hence an event); a stop saves every check probed since its last save."""
    from charhub_ops.monitoring.checks import CheckContext
    from charhub_ops.monitoring.loop import Sinks
    from charhub_ops.monitoring.store import MonitorState

    cfg = load_config(_config(tmp_path, {"id": "disk", "type": "disk", "paths": [str(tmp_path)],
                                         "levels": [99.7, 99.8, 99.9]}))
    sinks = Sinks(emit=lambda *a: None, context=lambda c, s, now: CheckContext(now=now))
    store = MonitorState(_Dict())
    saves = []
    real = store.save_check
    store.save_check = lambda state: (saves.append(state.probes[-1].at), real(state))
    for hours, saved in ((0, 2), (1, 0), (7, 1)):  # three windows of 5 min, at 0 h, 1 h and 7 h
        start, saves[:] = T0 + timedelta(hours=hours), []
        clock = {"t": start}
        Monitor(cfg, store, sinks).run(lambda c=clock: c["t"],
                                       lambda s, c=clock: c.update(t=c["t"] + timedelta(seconds=s)),
                                       until=start + timedelta(minutes=5))
        assert len(saves) == saved, hours  # 0 h: the pass streak's first two probes; 7 h: the 6-hour save
    clock = {"t": T0 + timedelta(hours=8)}
    monitor, saves[:] = Monitor(cfg, store, sinks), []
    monitor.tick(clock["t"])
    monitor.flush(clock["t"])  # a stop (SIGTERM): everything probed since its last save
    assert len(saves) == 1
