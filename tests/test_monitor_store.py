"""The two state stores keep the same contract: the Prefect Variables store (on the test server) and the
repository store (a local directory); listing pages through more keys than one API page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from functools import partial

import pytest

from charhub_ops.monitoring.incident_model import new_incident, resolve
from charhub_ops.monitoring.state import CheckState
from charhub_ops.monitoring.store import MonitorState, RepositoryStore
from charhub_ops.monitoring.variables import VariableStore
from charhub_ops.storage import LocalStorage


def _variables() -> VariableStore:
    from prefect.client.orchestration import get_client

    return VariableStore(partial(get_client, sync_client=True))


@pytest.fixture(params=["prefect", "repository"])
def store(request, tmp_path):
    if request.param == "prefect":
        request.getfixturevalue("prefect_server")
        s = _variables()
        s.page = 5
        return s
    return RepositoryStore(LocalStorage(tmp_path / "repo"))


def test_get_put_delete_and_paged_keys(store):
    base = f"t{uuid.uuid4().hex[:6]}"
    assert store.get(f"{base}/missing") is None
    for i in range(12):
        store.put(f"{base}/k{i:02d}", {"i": i})
    store.put(f"{base}/k00", {"i": 100})  # overwrite
    assert store.get(f"{base}/k00") == {"i": 100}
    assert sorted(store.keys(f"{base}/")) == [f"{base}/k{i:02d}" for i in range(12)]
    store.delete(f"{base}/k00")
    store.delete(f"{base}/k00")  # idempotent
    assert store.get(f"{base}/k00") is None and len(store.keys(f"{base}/")) == 11


def test_one_open_incident_per_check_and_the_slot_frees_on_resolve(store):
    state = MonitorState(store)
    cid, now = f"c{uuid.uuid4().hex[:6]}", datetime.now(UTC)
    state.save_check(CheckState(check_id=cid, fail_streak=3, status="down"))
    assert state.check(cid).fail_streak == 3
    inc = new_incident(cid, "high", "x", now, None, now, 3)
    state.save_incident(inc)
    assert state.open_incident(cid).id == inc.id
    state.save_incident(resolve(inc, now))
    assert state.open_incident(cid) is None
    assert [i.status for i in state.incidents() if i.check_id == cid] == ["resolved"]


def test_a_large_incident_round_trips_through_a_variable(prefect_server):
    from charhub_ops.monitoring.incident_model import add

    state = MonitorState(_variables())
    now = datetime.now(UTC)
    inc = new_incident(f"big_{uuid.uuid4().hex[:6]}", "critical", "x" * 300, now, now, now, 3)
    for i in range(40):
        inc = add(inc, now, f"step {i}: " + "detail " * 40)
    assert len(inc.model_dump_json()) > 5000  # more than one Variable holds
    state.save_incident(inc)
    assert state.incident(inc.id) == inc


def test_old_resolved_incidents_and_ended_windows_are_forgotten(tmp_path):
    from datetime import timedelta

    from charhub_ops.monitoring.windows import AdHocWindow

    state = MonitorState(RepositoryStore(LocalStorage(tmp_path / "repo")))
    now = datetime.now(UTC)
    old = resolve(new_incident("a", "high", "x", now - timedelta(days=100), None, None, 1), now - timedelta(days=99))
    recent = resolve(new_incident("b", "high", "x", now - timedelta(days=2), None, None, 1), now - timedelta(days=1))
    still_open = new_incident("c", "high", "x", now - timedelta(days=200), None, None, 1)
    for inc in (old, recent, still_open):
        state.save_incident(inc)
    state.save_window(AdHocWindow(id="w-old", start=now - timedelta(days=3), end=now - timedelta(days=2)))
    state.save_window(AdHocWindow(id="w-now", start=now, end=now + timedelta(hours=1)))
    assert state.prune_incidents(now, 90) == [old.id] and state.prune_windows(now) == ["w-old"]
    assert sorted(i.id for i in state.incidents()) == sorted([recent.id, still_open.id])
    assert [w.id for w in state.windows()] == ["w-now"]


def test_a_variable_value_is_packed_only_when_it_does_not_fit():
    """Small values are stored as they are; long ones compressed and read back the same; one that does not
    fit even compressed is one clear error naming the setting, never a truncation (no server needed)."""
    import hashlib

    from charhub_ops.errors import ConfigError
    from charhub_ops.monitoring.variables import LIMIT, pack, unpack

    small, long = {"a": 1}, {"steps": ["detail " * 40] * 40}
    assert pack(small) is small and unpack(pack(small)) == small
    assert len(str(pack(long))) < LIMIT < len(str(long)) and unpack(pack(long)) == long
    noise = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(300))  # incompressible
    with pytest.raises(ConfigError, match="CHARHUB_OPS_MONITOR_STATE=repository"):
        pack({"x": noise})
