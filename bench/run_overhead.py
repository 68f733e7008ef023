"""Fixed cost of a run: a tiny backup through the flow against a running Prefect server vs the raw pipe.

    .venv/bin/python bench/run_overhead.py [--runs 7] [--level 3] [--baseline DIR] [--no-bytecode-cache]

One run starts a throwaway PostgreSQL cluster with a tiny database (one 100-row table), a moto S3 server and a
real ``prefect server`` (SQLite, own PREFECT_HOME, analytics off), then, after one warm-up backup (the first
flow run on a server also registers the flow; reported apart), runs ``--runs`` rounds of

- ``raw``:  ``pg_dump -Fc -Z0 | zstd -N -T0 | uploader`` (bench/backup_bench.py's boto3 uploader), and
- ``flow``: ``charhub-ops backup --database-url … --to s3://… --json`` (CHARHUB_OPS_ZSTD_LEVEL=N),
- with ``--baseline DIR``, before it, ``baseline``: the same with the code in DIR first on the PYTHONPATH
  (before/after a change in one run, under the same load: ``git archive REV | tar -x -C DIR``),

in that order in odd rounds and with the two flow variants swapped in even ones (a CLI run right after another
meets the server still recording the other's logs and events), and prints the medians side by side, with, for
each flow run, from the server's records:

- ``in flow``: the flow run's own run time; ``before``: from the CLI process's start to the flow run's creation
  on the server (interpreter, imports, the CLI's input checks, the flow's registration); ``after``: from the flow
  run's end to the process's exit (Prefect's final API calls, its log and event workers flushing, exit);
- ``slot``: from the end of ``previous-backup`` (the task before the slot) to the run's ``postgres-<db>:
  acquired`` log line — creating the dump task run, making sure the one-slot limit exists, taking the slot;
- ``task→slot``: the same from the start of ``dump-database`` (what the lock itself costs);
- ``503s``: requests the Prefect server answered 503 during the run (SQLite ``database is locked``; Prefect's
  client then sleeps ~2 s before retrying). The services and the process tooling are backup_bench's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backup_bench as bb
from measure import api_post

from tests.harness.services import start_pg_cluster

DB = "bench_tiny"


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def slot_times(api: str, started: float, seconds: float) -> dict[str, float]:
    """Of the newest flow run (its process started at ``started``, epoch seconds, and ran ``seconds``): its run
    time, what came before it (process start → flow run created: interpreter, imports, checks) and after it
    (flow run ended → process gone), previous-backup end → acquired, dump-database start → acquired."""
    run = api_post(api, "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})[0]
    tasks = api_post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200})
    by_name = {t["name"].rsplit("-", 1)[0]: t for t in tasks}
    logs = api_post(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}},
                                             "sort": "TIMESTAMP_ASC", "limit": 200})
    acquired = next(_ts(r["timestamp"]) for r in logs if r["message"].endswith(": acquired"))
    return {"in_flow": float(run["total_run_time"]),
            "before": _ts(run["created"]).timestamp() - started,
            "after": started + seconds - _ts(run["end_time"]).timestamp(),
            "slot": (acquired - _ts(by_name["previous-backup"]["end_time"])).total_seconds(),
            "task_slot": (acquired - _ts(by_name["dump-database"]["start_time"])).total_seconds()}


def server_503s(server_home: Path) -> list[str]:
    """The statements the Prefect server answered 503 to so far (SQLite "database is locked"), shortened."""
    text = (server_home / "server.log").read_text(errors="replace")
    return [m.group(1)[:70] for m in re.finditer(r"Encountered retryable exception.*?\[SQL: (.*?)\n", text, re.S)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="rounds of raw + flow after the warm-up (median)")
    parser.add_argument("--level", type=int, default=3, help="zstd level of both (3: the flow's default)")
    parser.add_argument("--baseline", type=Path, help="a checkout of other code (e.g. `git archive REV | tar -x "
                        "-C DIR`): each round also runs the flow with it first on the PYTHONPATH, before this one")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="run the python processes as this environment does (PYTHONDONTWRITEBYTECODE=1)")
    args = parser.parse_args()
    bb.interrupt_on_sigterm()
    load_before = bb.loadavg()
    print(f"run overhead — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, commit {bb.git_state()}, "
          f"load average before: {load_before}", flush=True)
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="charhub-ops-overhead-"))
        stack.callback(shutil.rmtree, tmp, True)
        server, api, server_home, s3, _ = bb.start_services(stack, tmp)
        cluster = start_pg_cluster()
        stack.callback(cluster.stop)
        bb.make_tiny(cluster, DB)
        bb.log(f"waiting for the Prefect server … healthy after {bb.wait_prefect(server, api, server_home):.1f} s")
        cli_env, pg_env = bb.bench_envs(tmp, s3, api, cluster, args.no_bytecode_cache,
                                        CHARHUB_OPS_ZSTD_LEVEL=str(args.level))
        envs = {"flow": cli_env}
        if args.baseline:
            envs = {"baseline": {**cli_env, "PYTHONPATH": str(args.baseline.resolve())}, **envs}
        uploader = tmp / "uploader.py"
        uploader.write_text(bb.UPLOADER)
        if not args.no_bytecode_cache:
            for env in envs.values():
                bb.run_measured([("py", [sys.executable, "-c", "import flows.backup, boto3"])], env, cwd=bb.ROOT)
        counter = [0]

        def flow(env: dict[str, str]) -> dict[str, float]:
            counter[0] += 1
            before = server_503s(server_home)
            started = time.time()
            run = bb.run_measured([("cli", [bb.CLI, "backup", "--database-url", cluster.url(DB), "--to",
                                            f"s3://{bb.BUCKET}/flow-{counter[0]}", "--json"])], env, cwd=bb.ROOT)
            json.loads(run.stdout)
            locked = server_503s(server_home)[len(before):]
            if locked:
                bb.log(f"  503 answered to: {'; '.join(locked)}")
            return {"seconds": run.seconds, **slot_times(api, started, run.seconds), "503s": len(locked)}

        def raw() -> float:
            counter[0] += 1
            stages = [("pg_dump", [str(cluster.bin / "pg_dump"), "-Fc", "-Z0", DB]),
                      ("zstd", ["zstd", f"-{args.level}", "-T0", "-q", "-c"]),
                      ("upload", [sys.executable, str(uploader), bb.BUCKET, f"raw-{counter[0]}/dump.pgc.zst"])]
            return bb.run_measured(stages, pg_env).seconds

        for name, env in envs.items():
            warm = flow(env)
            bb.log(f"warm-up {name} run: {warm['seconds']:.2f} s, slot {warm['slot']:.2f} s (the first flow run on "
                   "a server also registers the flow)")
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in envs}
        raws: list[float] = []
        for i in range(args.runs):
            raws.append(raw())
            line = f"  round {i + 1}: raw {raws[-1]:.2f} s"
            order = list(envs.items())  # alternate: a run right after another CLI run meets the server still
            for name, env in (order if i % 2 == 0 else order[::-1]):  # recording that run's logs and events
                f = flow(env)
                runs[name].append(f)
                line += (f"; {name} {f['seconds']:.2f} s (in flow {f['in_flow']:.2f}, slot {f['slot']:.2f}, "
                         f"task→slot {f['task_slot']:.2f}, 503s {f['503s']:.0f})")
            bb.log(line + f"; load {bb.loadavg()}")
        report(args, runs, raws, load_before)
    return 0


ROWS = (("end to end", "seconds"), ("  start → flow run created", "before"), ("  flow run on the server", "in_flow"),
        ("  flow run ended → process gone", "after"),
        ("  previous-backup end → acquired", "slot"), ("  dump-database start → acquired", "task_slot"))


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, float]]], raws: list[float],
           load_before: str) -> None:
    print()
    print(f"results — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {bb.git_state()}"
          + (f" (baseline: {args.baseline})" if args.baseline else "")
          + f", tiny database, zstd {args.level}, median of {args.runs} (min–max), "
          + ("no bytecode cache" if args.no_bytecode_cache else "with a bytecode cache"))
    head = f"{'':<42}{'median s':>9}{'min':>7}{'max':>7}"
    print(head)
    print("-" * len(head))
    print(f"{'raw pg_dump|zstd|upload':<42}{median(raws):>9.2f}{min(raws):>7.2f}{max(raws):>7.2f}")
    for name, flows in runs.items():
        for label, key in ROWS:
            values = [f[key] for f in flows]
            label = f"{name} via CLI, {label}" if key == "seconds" else label
            print(f"{label:<42}{median(values):>9.2f}{min(values):>7.2f}{max(values):>7.2f}")
    for name, flows in runs.items():
        e2e, locked = median([f["seconds"] for f in flows]), [f["503s"] for f in flows]
        print(f"{name}: flow / raw (medians) {e2e / median(raws):.1f}×, flow − raw {e2e - median(raws):.2f} s; "
              f"Prefect API 503s in its runs: {sum(locked):.0f} ({', '.join(f'{v:.0f}' for v in locked)}); "
              f"target < 2.5 s end to end: {e2e:.2f} s {bb.verdict(e2e < 2.5)}")
    print(f"load average before: {load_before}; after: {bb.loadavg()}")


if __name__ == "__main__":
    bb.run_main(main)
