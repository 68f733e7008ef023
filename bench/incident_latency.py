"""Measure detection → incident run through a real Prefect server with the triggers of prefect.yaml.

    uv run python bench/incident_latency.py [--poll 2] [--repeat 3]

Starts ``prefect server`` (bench/measure.py; its log in the run's temp dir), serves the ``incident-respond`` and
``incident-resolve`` deployments (the runner polls every ``--poll`` seconds: PREFECT_RUNNER_POLL_FREQUENCY; a
worker's equivalent is PREFECT_WORKER_QUERY_SECONDS),
runs a monitor pass whose only check fails with threshold 1, and reports the time from the failing probe to the
``incident-respond`` run being created and starting (its start_time), per repetition.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import yaml
from measure import ROOT, start_prefect_server, stop_group, wait_prefect

SERVE = ("from deployments.serve import load_deployments; from prefect import serve; "
         "serve(*[d for d in load_deployments() if d.name in ('incident-respond', 'incident-resolve')])")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--poll", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="incident-latency-"))
    (work / "server").mkdir()
    server, api = start_prefect_server(work / "server")
    config = work / "monitor.yaml"
    env = {**os.environ, "PREFECT_HOME": str(work / "home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_RUNNER_POLL_FREQUENCY": str(int(args.poll)),
           "CHARHUB_OPS_MONITOR_CONFIG": str(config), "CHARHUB_OPS_MONITOR_STATE": "prefect"}
    os.environ.update({k: env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED",
                                           "CHARHUB_OPS_MONITOR_CONFIG", "CHARHUB_OPS_MONITOR_STATE")})
    runner = None
    try:
        wait_prefect(server, api, work / "server")
        runner = subprocess.Popen([sys.executable, "-c", SERVE], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        from prefect.client.orchestration import get_client

        _wait_for_deployments(get_client)
        time.sleep(3)  # the trigger service loads the new automations
        for _ in range(args.repeat):
            print(_one(config, get_client), flush=True)
    finally:
        if runner is not None:
            runner.terminate()
            runner.wait(30)
        stop_group(server)


def _wait_for_deployments(get_client) -> None:
    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while len(client.read_deployments()) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the served deployments did not appear")
            time.sleep(0.5)


def _one(config: Path, get_client) -> str:
    from flows.monitor import monitor_flow

    cid = f"lat-{uuid.uuid4().hex[:6]}"
    config.write_text(yaml.safe_dump({"checks": [{"id": cid, "type": "http", "url": "http://127.0.0.1:9/",
                                                  "threshold": 1, "recovery_threshold": 1, "timeout": 1}],
                                      "incident_dir": str(config.parent / "incidents")}))
    probe_at = datetime.now(UTC)
    monitor_flow(config=str(config))
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = [r for r in client.read_flow_runs() if (r.parameters or {}).get("check_id") == cid]
            if runs and runs[0].state and runs[0].state.is_final():  # the next repetition must not queue behind it
                run = runs[0]
                return (f"{cid}: failing probe → run created {(run.created - probe_at).total_seconds():.1f} s, "
                        f"→ run started {(run.start_time - probe_at).total_seconds():.1f} s, "
                        f"finished {run.state.name} {(run.end_time - probe_at).total_seconds():.1f} s")
            time.sleep(0.2)
    return f"{cid}: no incident run finished within 120 s"


if __name__ == "__main__":
    main()
