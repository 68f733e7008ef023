"""Measure event → run start on a real deployment: the triggers of prefect.yaml, two process workers.

    uv run python bench/event_latency.py [--poll 10] [--repeat 3]

Starts the e2e stack (tests/harness/prefect_server.py: a PostgreSQL-backed ``prefect server``, every
deployment registered by ``charhub-ops setup``, two ``prefect worker start --pool charhub-ops``, each polling
every ``--poll`` seconds: PREFECT_WORKER_QUERY_SECONDS, 10 by default in Prefect). Per repetition:

- a ``nightly-backup`` run; from its ``charhub.backup.completed`` event (the time it occurred) to the
  ``verify-after-backup`` and ``prune-after-backup`` runs being created and starting (their start_time);
- a ``charhub.service.down`` event posted to the server → the ``incident-respond`` run created / started.

"Picked up" is the run's PENDING state (a worker polled and claimed it); from there to "started" is the
run's own process starting (Python, Prefect, the pull step, the flow module).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from measure import pg_cluster  # first: it puts the repository root on sys.path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
from tests.harness.prefect_server import MONITOR_CHECK, OpsStack, start_ops_stack


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _run_where(stack: OpsStack, deployment: str, after: datetime, match) -> dict:
    """The first run of ``deployment`` created after ``after`` whose parameters satisfy ``match``, once final."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = [r for r in stack.runs_of(deployment) if _ts(r["created"]) >= after and match(r["parameters"])]
        if runs and runs[0]["start_time"]:
            return stack.wait_for_state(runs[0]["id"])  # the next repetition must not queue behind it
        time.sleep(0.2)
    raise RuntimeError(f"no {deployment} run started within 300 s")


def _figures(stack: OpsStack, label: str, origin: datetime, run: dict) -> str:
    """Seconds from ``origin`` to the run created (trigger), picked up (PENDING: a worker polled) and started
    (RUNNING: its process is up, the flow begins)."""
    states = stack.request("GET", f"/flow_run_states/?flow_run_id={run['id']}")
    pending = min(_ts(s["timestamp"]) for s in states if s["type"] == "PENDING")
    created, picked, started = ((moment - origin).total_seconds() for moment in
                                (_ts(run["created"]), pending, _ts(run["start_time"])))
    return (f"{label}: run created {created:.1f} s, picked up {picked:.1f} s, started {started:.1f} s "
            f"({run['state_name']})")


def _completed_event(stack: OpsStack, since: datetime) -> dict:
    body = {"filter": {"event": {"name": ["charhub.backup.completed"]}, "occurred": {"since": since.isoformat()}},
            "limit": 10}
    events = stack.request("POST", "/events/filter", body)["events"]
    assert events, "no charhub.backup.completed event"
    return events[0]


def _backup_chain(stack: OpsStack) -> list[str]:
    since = datetime.now(UTC)
    backup = stack.wait_for_state(stack.run("nightly-backup"))
    assert backup["state_type"] == "COMPLETED", backup["state"]["message"]
    event = _completed_event(stack, since)
    occurred = _ts(event["occurred"])
    backup_id, database = event["payload"]["backup_id"], event["payload"]["database"]
    verify = _run_where(stack, "verify-after-backup", since,
                        lambda p: (p.get("source") or {}).get("backup") == backup_id)
    prune = _run_where(stack, "prune-after-backup", since, lambda p: p.get("database") == database)
    return [_figures(stack, "backup.completed → verify-after-backup", occurred, verify),
            _figures(stack, "backup.completed → prune-after-backup", occurred, prune)]


def _incident(stack: OpsStack) -> str:
    posted = datetime.now(UTC)
    stack.emit("charhub.service.down", f"charhub.check.{MONITOR_CHECK}", {"check_id": MONITOR_CHECK})
    run = _run_where(stack, "incident-respond", posted, lambda p: p.get("check_id") == MONITOR_CHECK)
    return _figures(stack, "service.down → incident-respond", posted, run)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--poll", type=float, default=10.0, help="worker poll interval (PREFECT_WORKER_QUERY_SECONDS)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with pg_cluster() as pg:
        stack = start_ops_stack(Path(tempfile.mkdtemp(prefix="event-latency-")), pg, poll=args.poll)
        try:
            time.sleep(3)  # the trigger service loads the automations of the new deployments
            for n in range(1, args.repeat + 1):
                for line in [*_backup_chain(stack), _incident(stack)]:
                    print(f"#{n} poll {args.poll:g} s  {line}", flush=True)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
