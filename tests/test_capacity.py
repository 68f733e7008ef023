"""`charhub-ops capacity`: synthetic manifests and disk samples with known growth give the expected numbers;
a real repository of backups of a growing database gives positive growth for the growing table."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from charhub_ops.backup import engine
from charhub_ops.backup.manifest import Manifest, ObjectRef, TableStat, new_backup_id
from charhub_ops.monitoring.state import CheckState, DiskHistory, DiskSample, add_disk_sample
from charhub_ops.monitoring.store import MonitorState, RepositoryStore
from charhub_ops.pgurl import parse_pg_url
from charhub_ops.storage import LocalStorage

MIB, GIB = 1024 ** 2, 1024 ** 3
PNG = b"\x89PNG\r\n\x1a\n"


def _manifest(database: str, started: datetime, size: int, stored: int, tables: dict[str, int]) -> Manifest:
    ref = ObjectRef(key=f"{database}/x/dump.pgc.zst", size_bytes=stored, sha256="0" * 64)
    return Manifest(backup_id=new_backup_id(started), database=database, server_version="16.4",
                    server_version_num=160004, pg_dump_version="pg_dump (PostgreSQL) 16.4", dump_method="local",
                    started_at=started, finished_at=started + timedelta(minutes=1), database_size_bytes=size,
                    raw_size_bytes=stored * 4, stored_size_bytes=stored, sha256="0" * 64, dump=ref,
                    tool_version="t", tables=[TableStat(schema_name="public", name=n, rows=s // 1000, size_bytes=s)
                                              for n, s in tables.items()])


def _write(storage: LocalStorage, m: Manifest) -> None:
    storage.put_bytes(f"{m.database}/{m.backup_id}/manifest.json", m.model_dump_json().encode())


@pytest.fixture
def synthetic(tmp_path, monkeypatch):
    """Five weekly backups of `app` (+70 MiB/week: Message +50, Log +20, User flat), an old manifest
    without tables (`legacy`), a disk at +1 %/day reaching 70 % now, a policy covering Message."""
    now = datetime.now(UTC)
    repo = LocalStorage(str(tmp_path / "repo"))
    for week in range(5):
        at = now - timedelta(days=7 * (4 - week), hours=1)
        _write(repo, _manifest("app", at, GIB + week * 70 * MIB, 100 * MIB + week * 7 * MIB,
                               {"Message": 100 * MIB + week * 50 * MIB, "User": 500 * MIB,
                                "Log": 400 * MIB + week * 20 * MIB}))
    for day in (14, 0):
        _write(repo, _manifest("legacy", now - timedelta(days=day, hours=2), 10 * MIB - day * MIB, MIB, {}))
    (tmp_path / "monitor.yaml").write_text(
        f"checks:\n  - {{id: data, type: disk, paths: ['{tmp_path}'], levels: [70, 80, 85]}}\n")
    state = MonitorState(RepositoryStore(LocalStorage(str(tmp_path / "state"))))
    history = DiskHistory()
    for i in range(11):
        history = add_disk_sample(history, DiskSample(at=now - timedelta(days=10 - i), usage={str(tmp_path): 60.0 + i},
                                                      total_bytes={str(tmp_path): 1000 * GIB}))
    state.save_check(CheckState(check_id="data", disk_history=history))
    (tmp_path / "policy.yaml").write_text(
        "policies:\n  - {table: Message, timestamp_column: createdAt, older_than: 90d}\n")
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_POLICY_FILE", str(tmp_path / "policy.yaml"))
    monkeypatch.setenv("CHARHUB_OPS_MONITOR_CONFIG", str(tmp_path / "monitor.yaml"))
    return tmp_path


def _capacity(*args: str) -> dict:
    result = CliRunner().invoke(__import__("charhub_ops.cli", fromlist=["app"]).app, ["capacity", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_synthetic_manifests_give_the_known_growth(synthetic):
    chart = synthetic / "out" / "capacity.png"
    out = _capacity("--from", f"file://{synthetic}/repo", "--state", f"file://{synthetic}/state",
                    "--chart", str(chart))
    app = next(d for d in out["databases"] if d["database"] == "app")
    assert app["size_bytes"] == GIB + 4 * 70 * MIB and app["backups"] == 5
    assert app["growth_bytes_per_week"] == pytest.approx(70 * MIB, abs=1)
    assert app["backup_growth_bytes_per_week"] == pytest.approx(7 * MIB, abs=1)
    assert [(t["table"], t["growth_bytes_per_week"]) for t in app["top_tables"]] == [
        ("Message", pytest.approx(50 * MIB, abs=1)), ("Log", pytest.approx(20 * MIB, abs=1)), ("User", 0.0)]
    assert app["top_tables"][0]["cleanup_policy"] == "older_than 90d on createdAt"
    assert [(o["table"], o["cleanup_policy"]) for o in app["outpacing"]] == [
        ("Message", "older_than 90d on createdAt")]
    assert len(app["weeks"]) >= 4 and app["weeks"][-1]["size_bytes"] == app["size_bytes"]
    (disk,) = out["disks"]
    assert disk["used_percent"] == 70.0 and disk["samples"] == 11 and not disk["sampled_now"]
    assert disk["days_to_critical"] == pytest.approx(15.0, abs=0.1)  # 70 % → 85 % at +1 %/day
    assert app["disk"] == str(synthetic)
    free = 1000 * GIB * 0.30
    assert app["days_to_outgrow_disk"] == pytest.approx(free / (70 * MIB / 7), rel=1e-3)
    legacy = next(d for d in out["databases"] if d["database"] == "legacy")
    assert legacy["top_tables"] == [] and legacy["outpacing"] == []   # manifests without tables
    assert legacy["growth_bytes_per_week"] == pytest.approx(7 * MIB, abs=1)
    assert out["chart"] == str(chart) and chart.read_bytes()[:8] == PNG
    with Image.open(chart) as image:
        image.verify()
        assert image.size[0] > 300 and image.size[1] > 300


def test_without_samples_the_disk_is_sampled_now_and_not_forecast(synthetic):
    out = _capacity("--from", f"file://{synthetic}/repo", "--state", f"file://{synthetic}/empty-state",
                    "--chart", str(synthetic / "c.png"))
    (disk,) = out["disks"]
    assert disk["sampled_now"] and disk["samples"] == 1 and disk["days_to_critical"] in (None, 0.0)
    assert 0 < disk["used_percent"] <= 100
    assert any("sampled now" in n for n in out["notes"])


def test_no_backups_and_no_monitor_config(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARHUB_OPS_MONITOR_CONFIG", str(tmp_path / "missing.yaml"))
    out = _capacity("--from", f"file://{tmp_path}/empty", "--chart", str(tmp_path / "c.png"))
    assert out["databases"] == [] and out["disks"] == []
    assert any("no backups" in n for n in out["notes"]) and any("missing.yaml" in n for n in out["notes"])
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG


def test_markdown_output_is_a_table(synthetic):
    result = CliRunner().invoke(__import__("charhub_ops.cli", fromlist=["app"]).app, [
        "capacity", "--from", f"file://{synthetic}/repo", "--state", f"file://{synthetic}/state",
        "--chart", str(synthetic / "c.png")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Message" in result.stdout and "+70.0 MiB/week" in result.stdout and "15 days" in result.stdout


def _backup(storage: LocalStorage, url: str) -> None:
    pg_url = parse_pg_url(url)
    pre = engine.preflight(pg_url, None)
    dump = engine.dump_database(storage, pg_url, pre, pre.databases[0], new_backup_id(datetime.now(UTC)),
                                recipients=[])
    engine.write_manifest(storage, engine.build_manifest(pre, dump, None, None, [], 3))


def test_real_backups_of_a_growing_database(pg, database, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARHUB_OPS_MONITOR_CONFIG", str(tmp_path / "missing.yaml"))
    storage = LocalStorage(str(tmp_path / "repo"))
    with pg.connect(database.rsplit("/", 1)[1]) as conn:
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, body text)")
        conn.execute("CREATE TABLE users AS SELECT i AS id, md5(i::text) AS name FROM generate_series(1, 2000) i")
        for _ in range(3):
            conn.execute("INSERT INTO events (body) SELECT repeat(md5(i::text), 8) FROM generate_series(1, 20000) i")
            conn.execute("ANALYZE")
            _backup(storage, database)
    out = _capacity("--from", f"file://{tmp_path}/repo", "--chart", str(tmp_path / "c.png"))
    (db,) = out["databases"]
    assert db["database"] == database.rsplit("/", 1)[1] and db["backups"] == 3
    assert db["growth_bytes_per_week"] > 0 and db["backup_growth_bytes_per_week"] > 0
    top = db["top_tables"]
    assert top[0]["table"] == "events" and top[0]["growth_bytes_per_week"] > 0 and top[0]["rows"] == 60000
    users = next(t for t in top if t["table"] == "users")
    assert users["rows"] == 2000  # unchanged (autovacuum may add its free-space map: a few KiB)
    assert users["growth_bytes_per_week"] < top[0]["growth_bytes_per_week"] / 100
    assert [o["table"] for o in db["outpacing"]] == ["events"]
    assert Path(out["chart"]).read_bytes()[:8] == PNG


def test_flow_writes_the_artifact_with_the_chart_inline(prefect_server, synthetic, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.capacity import capacity_flow

    monkeypatch.setenv("CHARHUB_OPS_MONITOR_STATE", f"file://{synthetic}/state")
    out = capacity_flow(repository=f"file://{synthetic}/repo", chart=str(synthetic / f"{uuid.uuid4().hex}.png"))
    assert out["databases"][0]["growth_bytes_per_week"] is not None
    with get_client(sync_client=True) as client:
        only = ArtifactFilter(key=ArtifactFilterKey(any_=["capacity-report"]))
        (artifact,) = client.read_artifacts(artifact_filter=only, limit=1)
    assert "![capacity chart](data:image/png;base64," in artifact.data
    assert "| app |" in artifact.data and "Message" in artifact.data and out["chart"] in artifact.data


def test_capacity_deployment_runs_weekly_on_monday_morning():
    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parent.parent / "prefect.yaml").read_text())
    dep = next(d for d in spec["deployments"] if d["name"] == "capacity")
    assert dep["entrypoint"] == "flows/capacity.py:capacity_flow"
    assert dep["schedules"] == [{"cron": "0 5 * * 1", "timezone": "UTC", "active": True}]


def test_monitor_passes_keep_the_disk_samples_capacity_reads(tmp_path, monkeypatch):
    """Each monitor pass probes the disk; a sample is kept at most every 6 h, and capacity forecasts from them."""
    from charhub_ops.monitoring.config import load_config
    from charhub_ops.monitoring.runner import run_pass
    from charhub_ops.settings import load_settings

    (tmp_path / "monitor.yaml").write_text(f"checks:\n  - {{id: data, type: disk, paths: ['{tmp_path}']}}\n")
    monkeypatch.setenv("CHARHUB_OPS_MONITOR_CONFIG", str(tmp_path / "monitor.yaml"))
    cfg, settings = load_config(tmp_path / "monitor.yaml"), load_settings()
    state = MonitorState(RepositoryStore(LocalStorage(str(tmp_path / "state"))))
    now = datetime.now(UTC)
    for hours in (14, 13, 7, 0):  # the pass 13 h ago comes 1 h after the previous sample: not kept
        run_pass(cfg, state, settings, now - timedelta(hours=hours))
    kept = state.check("data").disk_history.samples()
    assert [round((now - s.at).total_seconds() / 3600) for s in kept] == [14, 7, 0]
    assert all(0 < s.usage[str(tmp_path)] <= 100 and s.total_bytes[str(tmp_path)] > 0 for s in kept)
    out = _capacity("--from", f"file://{tmp_path}/repo", "--state", f"file://{tmp_path}/state",
                    "--chart", str(tmp_path / "c.png"))
    (disk,) = out["disks"]
    assert disk["samples"] == 3 and not disk["sampled_now"] and disk["used_percent"] == kept[-1].usage[str(tmp_path)]
