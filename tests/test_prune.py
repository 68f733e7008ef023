"""Prune: pure planning table tests, then real runs against the S3 server, a local directory and Prefect."""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from charhub_ops.backup.manifest import MANIFEST, backup_prefix
from charhub_ops.errors import PolicyError
from charhub_ops.retention import prune as prune_module
from charhub_ops.retention.policy import RetentionPolicy
from charhub_ops.retention.prune import (
    BackupObjects,
    Inventory,
    Upload,
    execute_prune,
    plan_prune,
    prune,
    prune_to_json,
    scan_repository,
)
from charhub_ops.storage import LocalStorage, MemoryStorage, S3Storage

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DATA = ("dump.pgc.zst", "globals.sql.zst")


def bid(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%SZ") + "-0000"


def days_ago(n: float) -> datetime:
    return NOW - timedelta(days=n)


def backup(db: str, t: datetime, *, complete: bool = True, modified: datetime | None = None) -> BackupObjects:
    prefix = backup_prefix(db, bid(t))
    return BackupObjects(database=db, backup_id=bid(t), time=t, data=[prefix + name for name in DATA],
                         manifest=prefix + MANIFEST if complete else None, modified=modified or t)


def policy(**kwargs: object) -> RetentionPolicy:
    kwargs.setdefault("min_keep", 0)
    return RetentionPolicy.build(**kwargs)


# --- planning (pure) -----------------------------------------------------------------------------

A5 = [backup("a", days_ago(d)) for d in range(5)]  # newest first, one a day
PLAN_CASES = [
    pytest.param(
        [*A5, backup("b", days_ago(1)), backup("b", days_ago(2))], policy(keep_last=2),
        {"a": ([bid(days_ago(0)), bid(days_ago(1))], [bid(days_ago(d)) for d in (2, 3, 4)], []),
         "b": ([bid(days_ago(1)), bid(days_ago(2))], [], [])},
        id="policy-applies-per-database",
    ),
    pytest.param(
        [*A5, backup("a", NOW - timedelta(hours=1), complete=False)], policy(keep_last=1),
        {"a": ([bid(days_ago(0))], [bid(days_ago(d)) for d in (1, 2, 3, 4)], [bid(NOW - timedelta(hours=1))])},
        id="young-incomplete-is-in-progress-and-uses-no-count",
    ),
    pytest.param(
        A5, RetentionPolicy.build(keep_last=1),
        {"a": ([bid(days_ago(d)) for d in (0, 1, 2)], [bid(days_ago(d)) for d in (3, 4)], [])},
        id="min-keep-default-3",
    ),
    pytest.param(
        A5, RetentionPolicy.build(),
        {"a": ([bid(days_ago(d)) for d in range(5)], [], [])},
        id="empty-policy-removes-nothing",
    ),
    pytest.param(
        [backup("x", NOW - timedelta(hours=2), complete=False)], policy(keep_last=1),
        {"x": ([], [], [bid(NOW - timedelta(hours=2))])},
        id="database-with-only-a-running-backup",
    ),
]


@pytest.mark.parametrize(("backups", "pol", "expected"), PLAN_CASES)
def test_plan_per_database(backups: list[BackupObjects], pol: RetentionPolicy, expected: dict) -> None:
    plan = plan_prune(Inventory(repository="memory://t", backups=backups), pol, NOW)
    got = {d.database: ([k.backup_id for k in d.keep], [b.backup_id for b in d.remove], d.in_progress)
           for d in plan.databases}
    assert got == expected
    assert not plan.orphans


@pytest.mark.parametrize(
    ("age", "orphan"),
    [(timedelta(hours=23, minutes=59), False), (timedelta(hours=24), True), (timedelta(days=9), True)],
)
def test_incomplete_backup_becomes_orphan_after_24h(age: timedelta, orphan: bool) -> None:
    t = NOW - timedelta(days=10)
    stale = backup("a", t, complete=False, modified=NOW - age)  # age counts from the newest object
    plan = plan_prune(Inventory(repository="m", backups=[*A5, stale]), policy(keep_last=5), NOW)
    assert [o.backup_id for o in plan.orphans] == ([bid(t)] if orphan else [])
    assert plan.databases[0].in_progress == ([] if orphan else [bid(t)])
    assert (stale.data[0] in plan.data_keys()) is orphan


def test_stale_uploads_and_temporary_files() -> None:
    inventory = Inventory(
        repository="m", backups=A5,
        uploads=[Upload(key="a/x/dump.pgc.zst", upload_id="old", initiated=NOW - timedelta(hours=25)),
                 Upload(key="a/y/dump.pgc.zst", upload_id="new", initiated=NOW - timedelta(hours=2))],
        partials={"a/x/dump.pgc.zst.partial-1": NOW - timedelta(days=2), "a/y/m.partial-2": NOW},
    )
    plan = plan_prune(inventory, policy(keep_last=5), NOW)
    assert [u.upload_id for u in plan.uploads] == ["old"]
    assert plan.partials == ["a/x/dump.pgc.zst.partial-1"]
    assert plan.data_keys() == ["a/x/dump.pgc.zst.partial-1"]
    assert plan_prune(inventory, policy(keep_last=5), NOW, stale_after=timedelta(0)).partials == [
        "a/x/dump.pgc.zst.partial-1", "a/y/m.partial-2"]


def test_data_keys_hold_no_manifest_and_removed_backups_are_complete() -> None:
    plan = plan_prune(Inventory(repository="m", backups=A5), policy(keep_last=2), NOW)
    assert all(not k.endswith(MANIFEST) for k in plan.data_keys())
    assert len(plan.data_keys()) == 3 * len(DATA)
    assert all(b.manifest for b in plan.removed_backups())


def test_policy_that_removes_everything_names_the_database() -> None:
    everything = RetentionPolicy.model_construct(keep_daily=-2, min_keep=0)  # not constructible by build()
    with pytest.raises(PolicyError, match=r"^database a: retention policy would remove all 5 complete backups"):
        plan_prune(Inventory(repository="m", backups=A5), everything, NOW)
    plan = plan_prune(Inventory(repository="m", backups=A5), RetentionPolicy.model_construct(
        keep_daily=-2, min_keep=1), NOW)
    assert [(k.backup_id, k.reasons) for k in plan.databases[0].keep] == [(bid(NOW), ["min_keep"])]


# --- scanning ------------------------------------------------------------------------------------


def test_scan_groups_by_backup_and_ignores_foreign_objects() -> None:
    storage = MemoryStorage()
    t = days_ago(1)
    for key in [f"my%20db/{bid(t)}/dump.pgc.zst.age", f"my%20db/{bid(t)}/{MANIFEST}",
                f"my%20db/{bid(t)}/extra/nested.txt", f"other/{bid(t)}/globals.sql.zst",
                "README.md", "my%20db/not-an-id/dump.pgc.zst", "my%20db/loose-file", "dev/images/x.png"]:
        storage.put_bytes(key, b"x")
    inventory = scan_repository(storage)
    got = {(b.database, b.backup_id): (b.data, b.manifest) for b in inventory.backups}
    assert got == {
        ("my db", bid(t)): ([f"my%20db/{bid(t)}/dump.pgc.zst.age", f"my%20db/{bid(t)}/extra/nested.txt"],
                            f"my%20db/{bid(t)}/{MANIFEST}"),
        ("other", bid(t)): ([f"other/{bid(t)}/globals.sql.zst"], None),
    }
    assert inventory.unknown == 4
    assert [b.database for b in scan_repository(storage, "my db").backups] == ["my db"]
    assert scan_repository(storage, "my db").unknown == 2


# --- against the S3 server -----------------------------------------------------------------------


def put_backups(bucket: str, prefix: str, specs: list[tuple[str, datetime, bool]]) -> None:
    """(database, time, complete) → three (or two, without manifest) empty objects, put in parallel."""
    client = boto3.client("s3")
    keys = [f"{prefix}/{backup_prefix(db, bid(t))}{name}" for db, t, complete in specs
            for name in (*DATA, MANIFEST)[: 3 if complete else 2]]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=b""), keys))


def record_deletes(storage: S3Storage) -> list[list[str]]:
    """The keys of every DeleteObjects request, as sent (before-call sees the serialized XML body)."""
    calls: list[list[str]] = []

    def record(params: dict, **_: object) -> None:
        calls.append([k.decode() for k in re.findall(rb"<Key>(.*?)</Key>", params["body"])])

    storage.client.meta.events.register("before-call.s3.DeleteObjects", record)
    return calls


def keys_in(storage: S3Storage) -> set[str]:
    return {o.key for o in storage.list()}


def test_prune_2000_backups_on_s3(bucket: str) -> None:
    newest = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)
    specs = [("charhub_db", newest - timedelta(hours=6 * i), True) for i in range(1500)]
    specs += [("analytics", newest - timedelta(days=i), True) for i in range(501)]
    put_backups(bucket, "backups", specs)
    storage = S3Storage(bucket, "backups")
    calls = record_deletes(storage)
    pol = RetentionPolicy.build(keep_daily=7, keep_weekly=4, keep_monthly=6)

    plan, result = prune(storage, pol, NOW, dry_run=True)
    assert result is None and calls == [] and len(keys_in(storage)) == 3 * 2001
    assert sum(len(d.keep) + len(d.remove) for d in plan.databases) == 2001  # every page was listed

    plan, result = prune(storage, pol, NOW)
    kept = {f"backups/{backup_prefix(d.database, k.backup_id)}" for d in plan.databases for k in d.keep}
    assert 2 * 7 <= len(kept) <= 2 * (7 + 4 + 6)
    assert not result.warnings and not result.refused
    assert len(result.removed) == 2001 - len(kept) and result.deleted_objects == 3 * len(result.removed)
    assert {k.rsplit("/", 1)[0] + "/" for k in keys_in(storage)} == {k.removeprefix("backups/") for k in kept}
    assert len(keys_in(storage)) == 3 * len(kept)

    # two phases: every data key goes before any manifest, in batches of at most 1,000
    assert all(len(c) <= 1000 for c in calls)
    kinds = [{k.endswith(MANIFEST) for k in c} for c in calls]
    assert all(len(k) == 1 for k in kinds), "a DeleteObjects call mixes data and manifests"
    first_manifest_call = next(i for i, k in enumerate(kinds) if k == {True})
    assert all(k == {False} for k in kinds[:first_manifest_call])
    assert all(k == {True} for k in kinds[first_manifest_call:])
    assert sum(map(len, calls[:first_manifest_call])) == 2 * len(result.removed)

    calls.clear()
    again = prune(storage, pol, NOW)[1]
    assert again.removed == [] and calls == []  # idempotent: nothing left to do


def refuse_deletes(storage: S3Storage, locked: set[str], reason: str = "bucket lock") -> None:
    """Make DeleteObjects refuse ``locked`` keys the way S3/R2 does: not deleted, listed in Errors."""
    full = {storage._key(k) for k in locked}

    def drop(params: dict, context: dict, **_: object) -> None:
        objects = params["Delete"]["Objects"]
        context["refused"] = [o["Key"] for o in objects if o["Key"] in full]
        params["Delete"]["Objects"] = [o for o in objects if o["Key"] not in full]

    def report(parsed: dict, context: dict, **_: object) -> None:
        errors = [{"Key": k, "Code": "AccessDenied", "Message": reason} for k in context.get("refused", [])]
        parsed["Errors"] = parsed.get("Errors", []) + errors

    storage.client.meta.events.register("before-parameter-build.s3.DeleteObjects", drop)
    storage.client.meta.events.register("after-call.s3.DeleteObjects", report)


def test_refused_deletes_are_warnings_and_keep_the_manifest(bucket: str) -> None:
    times = [days_ago(d) for d in range(6)]
    put_backups(bucket, "r", [("db", t, True) for t in times])
    storage = S3Storage(bucket, "r")
    data_locked = f"{backup_prefix('db', bid(times[3]))}dump.pgc.zst"
    manifest_locked = f"{backup_prefix('db', bid(times[4]))}{MANIFEST}"
    refuse_deletes(storage, {data_locked, manifest_locked})

    plan, result = prune(storage, policy(keep_last=2), NOW)
    assert len(plan.removed_backups()) == 4
    assert result.refused == {data_locked: "AccessDenied: bucket lock", manifest_locked: "AccessDenied: bucket lock"}
    assert sorted(result.removed) == sorted(f"db/{bid(t)}" for t in (times[2], times[5]))
    assert len(result.warnings) == 2
    assert f"backup db/{bid(times[3])}: kept (manifest left in place)" in result.warnings[0]
    assert data_locked in result.warnings[0]
    assert f"backup db/{bid(times[4])}: its data was deleted" in result.warnings[1]
    left = keys_in(storage)
    assert {data_locked, f"{backup_prefix('db', bid(times[3]))}{MANIFEST}"} <= left  # still listed, still whole
    assert f"{backup_prefix('db', bid(times[3]))}globals.sql.zst" not in left
    assert manifest_locked in left
    assert prune_to_json(plan, result)["refused"] == result.refused


def test_orphans_and_incomplete_uploads_after_24h(bucket: str) -> None:
    put_backups(bucket, "o", [("db", days_ago(d), True) for d in range(3)] + [("db", days_ago(5), False)])
    client = boto3.client("s3")
    upload = client.create_multipart_upload(Bucket=bucket, Key=f"o/db/{bid(days_ago(4))}/dump.pgc.zst")
    foreign = client.create_multipart_upload(Bucket=bucket, Key="o/media/big.png")  # outside the layout
    storage = S3Storage(bucket, "o")
    # Ages are measured against what the server reports (moto reports a fixed 2010 "Initiated" for every
    # upload), and the objects were just written: both are young at `young`, both stale at `stale`.
    (initiated,) = {u["Initiated"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]}
    young = initiated + timedelta(hours=1)
    stale = max(datetime.now(UTC), initiated) + timedelta(hours=25)
    orphan = f"db/{bid(days_ago(5))}"

    plan, result = prune(storage, policy(keep_last=3), young)
    assert plan.orphans == [] and plan.uploads == [] and result.deleted_objects == 0
    assert plan.databases[0].in_progress == [bid(days_ago(5))]  # maybe a backup still running

    plan, result = prune(storage, policy(keep_last=3), stale)
    assert [o.name for o in plan.orphans] == [orphan] and [u.upload_id for u in plan.uploads] == [upload["UploadId"]]
    assert result.aborted_uploads == 1 and result.deleted_objects == 2 and not result.warnings
    assert not any(k.startswith(orphan) for k in keys_in(storage)) and len(keys_in(storage)) == 9
    left = client.list_multipart_uploads(Bucket=bucket, Prefix="o/").get("Uploads", [])
    assert [u["UploadId"] for u in left] == [foreign["UploadId"]]


def test_policy_error_deletes_nothing(bucket: str) -> None:
    put_backups(bucket, "p", [("db", days_ago(d), True) for d in range(3)])
    storage = S3Storage(bucket, "p")
    calls = record_deletes(storage)
    with pytest.raises(PolicyError, match="database db: retention policy would remove all 3"):
        prune(storage, RetentionPolicy.model_construct(keep_daily=-2, min_keep=0), NOW)
    assert calls == [] and len(keys_in(storage)) == 9


# --- local directory -----------------------------------------------------------------------------


def test_local_prune_removes_old_temp_files_and_empty_dirs(tmp_path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    for d in range(4):
        for name in (*DATA, MANIFEST):
            storage.put_bytes(backup_prefix("db", bid(days_ago(d))) + name, b"x")
    old_tmp = tmp_path / "repo" / "db" / bid(days_ago(9)) / "dump.pgc.zst.partial-1a2b3c4d"
    new_tmp = tmp_path / "repo" / "db" / bid(days_ago(0)) / "dump.pgc.zst.partial-5e6f7a8b"
    for path in (old_tmp, new_tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old_tmp, (two_days_ago, two_days_ago))

    plan, result = prune(storage, policy(keep_last=2), datetime.now(UTC))
    assert plan.partials == [old_tmp.relative_to(storage.root).as_posix()]
    assert sorted(result.removed) == sorted(f"db/{bid(days_ago(d))}" for d in (2, 3))
    assert not old_tmp.exists() and new_tmp.exists()
    assert sorted(p.name for p in (tmp_path / "repo" / "db").iterdir()) == [bid(days_ago(1)), bid(days_ago(0))]


def test_execute_prune_idempotent_on_memory() -> None:
    storage = MemoryStorage()
    for d in range(5):
        for name in (*DATA, MANIFEST):
            storage.put_bytes(backup_prefix("db", bid(days_ago(d))) + name, b"x")
    plan = plan_prune(scan_repository(storage), policy(keep_last=1), NOW)
    first, second = execute_prune(storage, plan), execute_prune(storage, plan)
    assert first == second and len(first.removed) == 4 and len(storage.objects) == 3


def test_public_api() -> None:
    assert prune_module.__all__ == [
        "STALE_AFTER", "BackupObjects", "Upload", "Inventory", "KeptBackup", "DatabasePlan", "PrunePlan",
        "PruneResult", "scan_repository", "plan_prune", "execute_prune", "prune", "prune_to_json",
        "incomplete_uploads", "abort_uploads",
    ]


# --- the Prefect flow ----------------------------------------------------------------------------

NO_PERIODS = {"keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}  # switch off the settings' defaults


def flow_artifacts(flow_run_id) -> dict[str, list[dict]]:
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: json.loads(a.data) if isinstance(a.data, str) else a.data for a in found}


def test_prune_flow_dry_run_then_real(prefect_server, bucket: str) -> None:
    from flows.prune import prune_flow

    put_backups(bucket, "f", [("db", days_ago(d), True) for d in range(6)])
    storage, repo = S3Storage(bucket, "f"), f"s3://{bucket}/f"

    state = prune_flow(repository=repo, policy={"keep_last": 2, "min_keep": 0, **NO_PERIODS}, dry_run=True,
                       return_state=True)
    out = state.result()
    assert out["dry_run"] and out["removed"] == [] and len(keys_in(storage)) == 18
    assert [k["reasons"] for k in out["databases"][0]["keep"]] == [["last"], ["last"]]
    assert out["databases"][0]["remove"] == [bid(days_ago(d)) for d in range(2, 6)]
    artifacts = flow_artifacts(state.state_details.flow_run_id)
    assert set(artifacts) == {"prune-preview"}
    assert [(r["action"], r["detail"]) for r in artifacts["prune-preview"]][:3] == [
        ("keep", "last"), ("keep", "last"), ("remove", "not kept by any rule")]

    state = prune_flow(repository=repo, policy={"keep_last": 2, "min_keep": 0, **NO_PERIODS}, return_state=True)
    out = state.result()
    assert not out["dry_run"] and sorted(out["removed"]) == sorted(f"db/{bid(days_ago(d))}" for d in range(2, 6))
    assert len(keys_in(storage)) == 6
    report = flow_artifacts(state.state_details.flow_run_id)["prune-report"]
    assert [r["action"] for r in report] == ["keep", "keep", "removed", "removed", "removed", "removed"]


def test_prune_flow_fails_on_a_bad_policy_before_listing(prefect_server, tmp_path) -> None:
    from flows.prune import prune_flow

    with pytest.raises(PolicyError, match="keep_within: cannot parse duration '1d1d': unit 'd' given twice"):
        prune_flow(repository=f"file://{tmp_path}", policy={"keep_within": "1d1d"})


def test_prune_after_backup_trigger_passes_repository_and_database() -> None:
    """The trigger in prefect.yaml (the one source), rendered against the event flows/backup.py emits."""
    from pathlib import Path

    import yaml
    from prefect.events import Event
    from prefect.server.utilities.user_templates import render_user_template_sync

    from flows.backup import COMPLETED
    from flows.prune import prune_flow

    spec = yaml.safe_load((Path(__file__).resolve().parent.parent / "prefect.yaml").read_text())
    (deployment,) = [d for d in spec["deployments"] if d["name"] == "prune-after-backup"]
    (trigger,) = deployment["triggers"]
    assert trigger["expect"] == [COMPLETED] and trigger["match"] == {"prefect.resource.id": "charhub.database.*"}
    event = Event(event=COMPLETED, resource={"prefect.resource.id": "charhub.database.charhub_db"},
                  payload={"backup_id": "x", "database": "charhub_db", "repository": "s3://charhub-backups/prod",
                           "size_bytes": 1})
    rendered = {name: render_user_template_sync(value, {"event": event}) if isinstance(value, str) else value
                for name, value in {**trigger["parameters"], "policy": {"keep_daily": 14}}.items()}
    assert rendered == {"repository": "s3://charhub-backups/prod", "database": "charhub_db",
                        "policy": {"keep_daily": 14}}
    validated = prune_flow.validate_parameters(rendered)
    assert validated["policy"].model_dump(exclude_none=True) == {"keep_daily": 14}
    assert {k: validated[k] for k in ("repository", "database")} == {k: rendered[k] for k in ("repository",
                                                                                            "database")}
