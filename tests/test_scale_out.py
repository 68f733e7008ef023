"""Scale-out and event chains on the shared stack: a PostgreSQL-backed Prefect server, the deployments of
prefect.yaml, two process workers on the pool charhub-ops (tests/harness/prefect_server.py).

Per-database work (backup, verify, migrate, cleanup) holds the one slot of the global concurrency limit
``postgres-<db>`` (tasks/locks.py), logged as ``postgres-<db>: acquired`` / ``released`` in each run. The
race is read from those log lines: for one database, no two sections overlap, whichever worker ran them.
"""

from __future__ import annotations

import re
from datetime import datetime

import psycopg
import pytest
import yaml

from tests.harness import prefect_server
from tests.harness.charhub_schema import create_charhub_schema
from tests.harness.migrations import write_migrations
from tests.harness.prefect_server import FINAL, MONITOR_CHECK, OpsStack
from tests.harness.services import PgCluster

ops_stack = prefect_server.ops_stack  # the shared stack (one per session)
SECTION = re.compile(r"^(postgres-\S+): (acquired|released)$")
WORKER = re.compile(r"^Worker '([^']+)' submitting flow run")
POLICY = {"policies": [{"table": "UsageLog", "timestamp_column": "timestamp", "older_than": "30d",
                        "where": {"processed": True}}]}


def _new_backups(stack: OpsStack, database: str, known: set[str]) -> list[str]:
    return sorted(p.parent.name for p in (stack.home / "repo" / database).glob("*/manifest.json")
                  if p.parent.name not in known)


def _matches(parameters: dict, wanted: dict) -> bool:
    """``wanted`` is a subset of ``parameters`` (groups compared key by key)."""
    return all(_matches(parameters.get(k) or {}, v) if isinstance(v, dict) else parameters.get(k) == v
               for k, v in wanted.items())


def _first_run(stack: OpsStack, deployment: str, **params) -> dict:
    """The first run of ``deployment`` created with these parameters (by a trigger), once it exists."""
    import time

    deadline = time.monotonic() + 180
    while True:
        runs = [r for r in stack.runs_of(deployment) if _matches(r["parameters"], params)]
        if runs:
            return runs[0]
        assert time.monotonic() < deadline, f"no {deployment} run with {params}"
        time.sleep(0.5)


def test_a_completed_backup_starts_verify_and_prune(ops_stack) -> None:
    known = set(_new_backups(ops_stack, "e2e_app", set()))
    backup = ops_stack.wait_for_state(ops_stack.run("nightly-backup"))
    assert backup["state_type"] == "COMPLETED", backup["state"]["message"]
    (backup_id,) = _new_backups(ops_stack, "e2e_app", known)

    verify = _first_run(ops_stack, "verify-after-backup", source={"backup": backup_id, "source_database": "e2e_app"})
    prune = [r for r in ops_stack.runs_of("prune-after-backup") if r["created"] > backup["start_time"]]
    assert prune and prune[0]["parameters"]["database"] == "e2e_app"
    for run in (verify, prune[0]):
        done = ops_stack.wait_for_state(run["id"])
        assert done["state_type"] == "COMPLETED", (run["name"], done["state"]["message"])


def test_a_service_down_event_starts_the_incident_flow(ops_stack) -> None:
    ops_stack.emit("charhub.service.down", f"charhub.check.{MONITOR_CHECK}", {"check_id": MONITOR_CHECK})
    run = _first_run(ops_stack, "incident-respond", check_id=MONITOR_CHECK)
    done = ops_stack.wait_for_state(run["id"])
    assert done["start_time"] is not None, "the incident run never started"
    assert done["state_type"] == "COMPLETED", done["state"]["message"]


# --- the race -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_databases(ops_stack, pg: PgCluster, tmp_path_factory) -> dict:
    """Databases e2e_a and e2e_b (CharHub's schema, usage rows to clean), a Secret block with each URL, a
    cleanup policy and one pending migration."""
    from prefect.blocks.system import Secret

    work = tmp_path_factory.mktemp("race")
    for name in ("e2e_a", "e2e_b"):
        url = pg.create_database(name)
        create_charhub_schema(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("""INSERT INTO "UsageLog" (id, "timestamp", processed)
                SELECT 'u' || g, now() - make_interval(days => g), g % 2 = 0 FROM generate_series(1, 2000) g""")
        with ops_stack.settings():
            Secret(value=url).save(_secret(name), overwrite=True)
    policy = work / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    migrations = write_migrations(work / "migrations", {"20260101000000_e2e_note":
                                                        'CREATE TABLE "E2eNote" ("id" TEXT PRIMARY KEY);\n'})
    return {"policy": str(policy), "migrations": str(migrations)}


def _secret(database: str) -> str:
    return database.replace("_", "-") + "-url"  # block names: lowercase letters, digits, dashes


def _params(kind: str, database: str, setup: dict, backup_id: str | None = None) -> tuple[str, dict]:
    access = {"database_url_secret": _secret(database)}
    return {
        "backup": ("nightly-backup", {"access": access}),
        "cleanup": ("cleanup", {**access, "parts": ["rows"], "policy_file": setup["policy"]}),
        "migrate": ("migrate", {"access": access, "migrations_dir": setup["migrations"], "dry_run": False}),
        "verify": ("verify-after-backup", {"source": {"source_database": database, "backup": backup_id},
                                           "access": {"database_url_secret": "charhub-ops-scratch-url"}}),
    }[kind]


def _sections(stack: OpsStack, run_ids: list[str], name: str, count: int) -> list[tuple[datetime, datetime, str]]:
    """(acquired, released, run id) of the ``count`` sections of limit ``name`` in these runs' logs — waiting
    for them: a run's last log lines reach the server in a batch after its final state."""
    import time

    deadline = time.monotonic() + 120
    while len(spans := _read_sections(stack, run_ids).get(name, [])) < count:
        assert time.monotonic() < deadline, f"{len(spans)} sections of {name} logged, {count} expected"
        time.sleep(1)
    return spans


def _read_sections(stack: OpsStack, run_ids: list[str]) -> dict[str, list[tuple[datetime, datetime, str]]]:
    out: dict[str, list] = {}
    for run_id in run_ids:
        opened: dict[str, datetime] = {}
        for log in stack.logs(run_id):
            match = SECTION.match(log["message"])
            if match:
                at = datetime.fromisoformat(log["timestamp"])
                if match[2] == "acquired":
                    opened[match[1]] = at
                else:
                    out.setdefault(match[1], []).append((opened.pop(match[1]), at, run_id))
    return {name: sorted(spans) for name, spans in out.items()}


def _worker(stack: OpsStack, run_id: str) -> str:
    return next(m[1] for log in stack.logs(run_id) if (m := WORKER.match(log["message"])))


def test_per_database_work_never_overlaps_across_two_workers(ops_stack, two_databases) -> None:
    import time

    from tasks.locks import database_lock

    # 1. While the test holds postgres-e2e_a, a backup of e2e_a waits inside its dump task, and a cleanup
    #    of e2e_b runs to the end: other databases are not serialized behind it.
    with ops_stack.settings(), database_lock("e2e_a"):
        backup_a = ops_stack.run(*_params("backup", "e2e_a", two_databases))
        cleanup_b = ops_stack.run(*_params("cleanup", "e2e_b", two_databases))
        done_b = ops_stack.wait_for_state(cleanup_b)
        assert done_b["state_type"] == "COMPLETED", done_b["state"]["message"]
        deadline = time.monotonic() + 180
        while not any(t["state_type"] == "RUNNING" for t in ops_stack.task_runs(backup_a, "dump-database")):
            assert ops_stack.flow_run(backup_a)["state_type"] not in FINAL, "the backup ran while the slot was held"
            assert time.monotonic() < deadline, "the backup of e2e_a never reached its dump"
            time.sleep(0.5)
        assert ops_stack.flow_run(backup_a)["state_type"] == "RUNNING", "the backup ran while the slot was held"
        released = datetime.now().astimezone()
    done_a = ops_stack.wait_for_state(backup_a)
    assert done_a["state_type"] == "COMPLETED", done_a["state"]["message"]
    ((acquired, _, _),) = _sections(ops_stack, [backup_a], "postgres-e2e_a", 1)
    assert acquired > released, "the backup entered its section while the test held postgres-e2e_a"
    (backup_id,) = _new_backups(ops_stack, "e2e_a", set())

    # 2. Backup, verify, migrate (its backup first, then the apply: two sections) and cleanup of e2e_a,
    #    submitted at once to two idle workers (two runs each).
    ops_stack.wait_idle()
    runs = [ops_stack.run(*_params(kind, "e2e_a", two_databases, backup_id))
            for kind in ("backup", "verify", "migrate", "cleanup")]
    for run_id in runs:
        done = ops_stack.wait_for_state(run_id)
        assert done["state_type"] == "COMPLETED", (done["name"], done["state"]["message"])
    ops_stack.wait_idle()  # and the runs their backups triggered (verify-after-backup locks e2e_a too)
    everything = [r["id"] for r in ops_stack.request("POST", "/flow_runs/filter", {})]  # subflows included
    spans = _sections(ops_stack, everything, "postgres-e2e_a", 6)  # phase 1 + backup, verify, migrate's
    for (_, end, first), (start, _, second) in zip(spans, spans[1:], strict=False):  # backup and apply, cleanup
        assert end < start, f"runs {first} and {second} held postgres-e2e_a at the same time"
    assert len({_worker(ops_stack, r) for r in runs}) == 2, "one worker ran everything: no race across workers"
