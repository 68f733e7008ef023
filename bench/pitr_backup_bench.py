"""pgBackRest backup through the ``pitr-backup`` flow vs the same ``pgbackrest backup --type=full`` by hand, side
by side in one run, and the physical backup's size beside the logical backup's of the same database.

    .venv/bin/python bench/pitr_backup_bench.py [--size-gb 0.2] [--repeat 3]

One run (see bench/README.md):

1. a throwaway cluster archiving through pgBackRest (tests/harness/pitr.py) gets a database ``bench`` of
   ~``--size-gb`` GB (bench/datagen.py), a real ``prefect server``, ``charhub-ops pitr setup`` (posix repository)
   and, untimed, one full backup by hand (pgBackRest's first backup of a cluster is not what the schedule runs);
2. ``--repeat`` rounds, alternating on the same machine:
   * ``by hand``: ``pgbackrest --config=… --stanza=… backup --type=full`` as the cluster's owner;
   * ``flow``: a new Python process running ``pitr_backup_flow(kind="full")`` against the server — what a
     worker does — timed end to end (imports included) and as the server saw the flow run (``total_run_time``:
     plan, lock, backup, info, artifact, event; the process's start-up excluded);
   the best of each is reported (and the medians logged); goal: flow <= 1.10x by hand;
3. ``charhub-ops backup`` (logical, zstd) of the same database into a local repository, untimed: its stored
   size beside the physical full backup's (repository bytes, pgBackRest's zst) and the cluster's size;
4. prints the figures with the machine's load average before and after; removes everything it started.

Helpers (the cluster, the environment, the CLI runner) are bench/pitr_bench.py's (the restore bench).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from statistics import median

import measure
from datagen import db_size, generate
from measure import GB, ROOT, log
from pitr_bench import cli, envs, start_cluster

FLOW = "from flows.pitr import pitr_backup_flow; pitr_backup_flow(kind='full')"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-gb", type=float, default=0.2)
    p.add_argument("--jobs", type=int, default=2, help="loading sessions of the generator")
    p.add_argument("--repeat", type=int, default=3)
    return p.parse_args()


def by_hand(cluster) -> float:
    started = time.perf_counter()
    proc = cluster.pgbackrest("backup", "--type=full")
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"pgbackrest backup by hand failed: {proc.stderr.strip()[:300]}")
    return seconds


def by_flow(env: dict[str, str], api: str) -> tuple[float, float]:
    """(seconds of the process end to end, seconds of the flow run as the server recorded it)."""
    run = measure.run_measured([("flow", [sys.executable, "-c", FLOW])], env, cwd=ROOT, timeout=7200)
    in_flow, _ = measure.last_flow_run(api)
    return run.seconds, in_flow


def sizes(cluster, env: dict[str, str]) -> dict:
    """The newest full backup (repository bytes) and the logical backup of the same database."""
    info = json.loads(cluster.pgbackrest("info", "--output=json").stdout)[0]
    full = [b for b in info["backup"] if b["type"] == "full"][-1]
    logical = json.loads(cli(env, "backup", "--database-url", cluster.url("bench"), "--json").stdout)
    return {"cluster_bytes": full["info"]["size"], "physical_stored_bytes": full["info"]["repository"]["delta"],
            "logical_stored_bytes": logical["size_bytes"], "logical_raw_bytes": logical["raw_size_bytes"]}


def main() -> int:
    args = parse_args()
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="bench-pitr-backup-"))
        tmp.chmod(0o755)
        stack.callback(shutil.rmtree, tmp, True)
        (tmp / "prefect-server").mkdir()
        server, api = measure.start_prefect_server(tmp / "prefect-server")
        stack.callback(measure.stop_group, server)
        cluster = start_cluster(stack)
        (tmp / "logical").mkdir()
        env = envs(cluster, tmp, api, tmp / "logical")
        measure.wait_prefect(server, api, tmp / "prefect-server")
        load_before = measure.loadavg()
        generate(cluster, "bench", int(args.size_gb * GB), args.jobs)
        size = db_size(cluster, "bench")
        cli(env, "pitr", "setup")
        log(f"database bench: {size / GB:.2f} GB; first full by hand (untimed): {by_hand(cluster):.1f} s")
        hand, process, flow = [], [], []
        for n in range(args.repeat):
            hand.append(by_hand(cluster))
            end_to_end, in_flow = by_flow(env, api)
            process.append(end_to_end)
            flow.append(in_flow)
            log(f"round {n + 1}: by hand {hand[-1]:.2f} s, flow run {flow[-1]:.2f} s (process {process[-1]:.2f} s)")
        mid = median(flow) / median(hand)
        log(f"medians: by hand {median(hand):.2f} s, flow run {median(flow):.2f} s ({mid:.2f}x), "
            f"process {median(process):.2f} s")
        report(size, min(hand), min(flow), min(process), sizes(cluster, env), load_before, measure.loadavg(), args)
    return 0


def report(size: int, hand: float, flow: float, process: float, stored: dict, load0: str, load1: str,
           args: argparse.Namespace) -> None:
    print(json.dumps({"database_gb": round(size / GB, 3), "by_hand_s": round(hand, 2), "flow_run_s": round(flow, 2),
                      "flow_process_s": round(process, 2), "ratio_flow_run": round(flow / hand, 2),
                      "ratio_flow_process": round(process / hand, 2), **stored, "repeat": args.repeat,
                      "load_before": load0, "load_after": load1, "commit": measure.git_state()}, indent=2))
    print(f"full backup of a {size / GB:.2f} GB database: by hand {hand:.2f} s, pitr-backup flow run {flow:.2f} s = "
          f"{flow / hand:.2f}x (goal <= 1.10x); the flow's whole process (imports included) {process:.2f} s = "
          f"{process / hand:.2f}x")
    print(f"stored: physical full {stored['physical_stored_bytes'] / 1e6:.1f} MB (cluster "
          f"{stored['cluster_bytes'] / 1e6:.1f} MB), logical {stored['logical_stored_bytes'] / 1e6:.1f} MB "
          f"(dump {stored['logical_raw_bytes'] / 1e6:.1f} MB)")


if __name__ == "__main__":
    measure.run_main(main)
