"""Backup benchmark: the backup flow (CLI) vs a raw pg_dump | zstd pipe vs pg_dump's own gzip, to one S3 server.

The three upload the same generated ~3 GB database to one local S3 server (moto); see bench/README.md.

    .venv/bin/python bench/backup_bench.py [--size-gb 3] [--repeat 1] [--keep]

One run:

1. builds a throwaway PostgreSQL cluster (tests/harness) with a database of ~``--size-gb`` GB of mixed
   content (chat-like text from a Zipf vocabulary, jsonb events, random bytea thumbnails, btree indexes),
   loaded with ``INSERT ... SELECT generate_series`` in parallel sessions, then VACUUM (FREEZE, ANALYZE);
   plus a small database (``--small-gb``, RSS flatness) and a tiny one (fixed cost);
2. starts a moto S3 server and a real ``prefect server`` (own PREFECT_HOME, analytics off);
3. times, each against the same S3 server under its own prefix (best of ``--repeat``, interleaved):
   flow@1 / flow@3 (``charhub-ops backup --json`` with CHARHUB_OPS_ZSTD_LEVEL), raw@1 / raw@3
   (``pg_dump -Fc -Z0 | zstd -N -T0 | uploader``), naive (``pg_dump -Fc | uploader``, pg_dump's gzip -6),
   flow@3 on the small database, and the tiny database backup (best of 3);
4. prints one table (seconds, stored bytes, ratios, peak RSS), one of CPU seconds by component (ours,
   PostgreSQL, S3 server, Prefect server, the rest of the machine = other users) with the flow run's own
   run time from the Prefect API, the startup cost, and the targets of the issue;
5. stops everything it started, also on failure or Ctrl-C.

The uploader of raw/naive is a tiny boto3 script (``upload_fileobj`` from stdin, 8 MiB parts, 4 threads,
R2-safe checksum settings: the flow's own TransferConfig), with no SHA-256. Peak RSS is VmHWM from
/proc (polled every 20 ms, cross-checked with wait4's ru_maxrss); CPU seconds are user+sys of the
measured processes and their children (pg_dump included); PostgreSQL, moto and the Prefect server are
counted apart from /proc/<pid>/stat of their process trees.

This environment sets PYTHONDONTWRITEBYTECODE=1, so every Python start compiles Prefect's ~1,300 modules
again (~1.3 s). By default the measured Python processes get a private bytecode cache (PYTHONPYCACHEPREFIX in
the run's temp dir, filled once before timing), as an installed package has; ``--no-bytecode-cache`` measures
them as the environment runs them.

``--keep`` saves the generated cluster under ``--cache-dir`` and reuses it when run again with the same
``--size-gb``/``--small-gb`` (generation is skipped; the page cache is warmed by reading the data dir).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from datagen import db_size, generate, make_tiny, open_cluster
from measure import (
    BUCKET,
    CLI,
    GB,
    ROOT,
    PgCluster,
    Run,
    Setup,
    bench_envs,
    flow_cells,
    flow_run_stats,
    fmt_mb,
    git_state,
    interrupt_on_sigterm,
    loadavg,
    log,
    print_head,
    run_main,
    run_measured,
    service_pids,
    start_services,
    verdict,
    wait_prefect,
)
from measure import Row as MethodRow

UPLOADER = '''\
import sys, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
bucket, key = sys.argv[1], sys.argv[2]
client = boto3.client("s3", config=Config(request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required", max_pool_connections=10))
cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4, use_threads=True)
cfg.max_in_memory_upload_chunks = 5
client.upload_fileobj(sys.stdin.buffer, bucket, key, Config=cfg)
'''


@dataclass
class Row(MethodRow):
    level: str = ""   # zstd level ("gz6": pg_dump's gzip), to compare with the raw pipe of the same level
    stored: int = 0   # bytes of the dump object


def py_peak(run: Run) -> int:
    """VmHWM (KiB) of the CLI's python process, or of the uploader for raw/naive."""
    return run.peak(lambda k: k in ("cli", "upload"))


RAW1, RAW3, FLOW1, FLOW3, NAIVE = ("raw   pg_dump|zstd -1", "raw   pg_dump|zstd -3", "flow  CLI, zstd 1",
                                   "flow  CLI, zstd 3 (dflt)", "naive pg_dump -Fc (gzip)")
SMALL, TINY = "flow  small DB, zstd 3", "flow  tiny DB, zstd 3"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=3.0, help="size of the generated database (GB, 10^9)")
    parser.add_argument("--small-gb", type=float, default=0.3, help="second, smaller database for RSS flatness "
                                                                     "(0 or ≥ size-gb: skipped)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each big-database method (best is kept)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel sessions for generation")
    parser.add_argument("--keep", action="store_true", help="save the generated cluster in --cache-dir and reuse it")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "charhub-ops-backup-bench")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="run the python processes as this environment does (PYTHONDONTWRITEBYTECODE=1: every "
                             "start compiles Prefect again) instead of with a private bytecode cache")
    return parser.parse_args()


def make_databases(stack: ExitStack, args: argparse.Namespace) -> tuple[PgCluster, dict[str, int], float]:
    """The cluster with bench (and bench_small) generated and bench_tiny: (cluster, sizes, small GB or 0)."""
    small = args.small_gb if 0 < args.small_gb < args.size_gb else 0
    gen_seconds: dict[str, float] = {}

    def fill(cluster: PgCluster) -> None:
        gen_seconds["bench"] = generate(cluster, "bench", int(args.size_gb * GB), args.jobs)
        if small:
            log(f"generating ~{small:g} GB (small database) …")
            gen_seconds["bench_small"] = generate(cluster, "bench_small", int(small * GB), args.jobs)
        make_tiny(cluster, "bench_tiny")

    cluster = open_cluster(stack, args, {"size_gb": args.size_gb, "small_gb": small}, fill)
    dbs = ["bench", "bench_tiny"] + (["bench_small"] if small else [])
    sizes = {db: db_size(cluster, db) for db in dbs}
    for db, secs in gen_seconds.items():
        log(f"generated {db}: {sizes[db] / GB:.2f} GB (pg_database_size) in {secs:.1f} s "
            f"({sizes[db] / secs / 1e6:.0f} MB/s)")
    for db, size in sizes.items():
        log(f"pg_database_size({db}) = {size:,} bytes")
    return cluster, sizes, small


@dataclass
class Methods(Setup):
    """The measured methods against one cluster and one S3 server; every run is recorded in ``rows``."""
    s3client: Any
    uploader: Path
    rows: dict[str, Row] = field(default_factory=dict)
    counter: int = 0

    def stored_and_clean(self, prefix: str) -> int:
        """Size of the dump object under ``prefix`` (then every object there is deleted)."""
        objs = [o for page in self.s3client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
                for o in page.get("Contents", [])]
        dump = [o["Size"] for o in objs if "dump" in o["Key"].rsplit("/", 1)[-1]]
        for i in range(0, len(objs), 1000):
            batch = [{"Key": o["Key"]} for o in objs[i:i + 1000]]
            self.s3client.delete_objects(Bucket=BUCKET, Delete={"Objects": batch})
        if len(dump) != 1:
            raise RuntimeError(f"expected one dump object under {prefix}, found {[o['Key'] for o in objs]}")
        return dump[0]

    def flow(self, db: str, level: int) -> tuple[Run, int]:
        """``charhub-ops backup --json`` of ``db`` at zstd ``level``: (run, stored bytes)."""
        self.counter += 1
        prefix = f"flow{level}-{db}-{self.counter}"
        run = run_measured([("cli", [CLI, "backup", "--database-url", self.cluster.url(db), "--to",
                                     f"s3://{BUCKET}/{prefix}", "--json"])],
                           {**self.cli_env, "CHARHUB_OPS_ZSTD_LEVEL": str(level)}, cwd=ROOT, watch=self.watch)
        result = json.loads(run.stdout)
        run.extra = {"raw_bytes": result.get("raw_size_bytes"), **self.run_stats()}
        return run, self.stored_and_clean(prefix)

    def pipe(self, name: str, level: int | None) -> tuple[Run, int]:
        """``pg_dump -Fc -Z0 | zstd -<level> | uploader`` (level None: ``pg_dump -Fc | uploader``)."""
        self.counter += 1
        key = f"{name}-{self.counter}/dump.pgc" + (".zst" if level else "")
        pg_dump = str(self.cluster.bin / "pg_dump")
        up = ("upload", [sys.executable, str(self.uploader), BUCKET, key])
        if level is None:
            stages = [("pg_dump", [pg_dump, "-Fc", "bench"]), up]
        else:
            stages = [("pg_dump", [pg_dump, "-Fc", "-Z0", "bench"]),
                      ("zstd", ["zstd", f"-{level}", "-T0", "-q", "-c"]), up]
        run = run_measured(stages, self.pg_env, watch=self.watch)
        return run, self.stored_and_clean(key.rsplit("/", 1)[0] + "/")

    def record(self, label: str, level: str, fn: Callable[[], tuple[Run, int]]) -> Run:
        run, stored = fn()
        row = self.rows.setdefault(label, Row(label, [], level=level, stored=stored))
        row.runs.append(run)
        row.stored = stored
        peak = py_peak(run)
        log(f"  {label:<26} {run.seconds:8.2f} s  {stored:>14,} B  py peak {peak / 1024:4.0f} MB  "
            f"cpu {run.cpu:5.1f} s  other users {run.other_cpu:5.1f} cpu-s  load {loadavg()}")
        return run

    def run_all(self, repeat: int, small: float) -> None:
        # fixed cost first (its first run also pays the first-flow-run registration on the server)
        log("tiny database via the CLI (3 runs) …")
        for _ in range(3):
            self.record(TINY, "3", lambda: self.flow("bench_tiny", 3))
        log(f"big database: {repeat} round(s) of raw@1, flow@1, raw@3, flow@3, naive …")
        for _ in range(repeat):
            self.record(RAW1, "1", lambda: self.pipe("raw1", 1))
            self.record(FLOW1, "1", lambda: self.flow("bench", 1))
            self.record(RAW3, "3", lambda: self.pipe("raw3", 3))
            self.record(FLOW3, "3", lambda: self.flow("bench", 3))
            self.record(NAIVE, "gz6", lambda: self.pipe("naive", None))
        if small:
            log("small database via the CLI (RSS flatness) …")
            self.record(SMALL, "3", lambda: self.flow("bench_small", 3))


def measure_startup(cli_env: dict[str, str]) -> dict[str, float]:
    log("startup cost (best of 3) …")
    startup: dict[str, float] = {}
    nopyc_env = {**cli_env, "PYTHONDONTWRITEBYTECODE": "1"}
    nopyc_env.pop("PYTHONPYCACHEPREFIX", None)
    for label, argv, env in [("python -c pass", [sys.executable, "-c", "pass"], cli_env),
                             ("import flows.backup", [sys.executable, "-c", "import flows.backup"], cli_env),
                             ("same, no bytecode cache", [sys.executable, "-c", "import flows.backup"], nopyc_env)]:
        startup[label] = min(run_measured([("py", argv)], env, cwd=ROOT).seconds for _ in range(3))
    return startup


def print_methods(rows: dict[str, Row], sizes: dict[str, int], small: float, args: argparse.Namespace) -> None:
    raw = {"1": rows[RAW1].best.seconds, "3": rows[RAW3].best.seconds}
    naive = rows[NAIVE]
    print()
    print(f"results — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, commit {git_state()}; "
          f"database {sizes['bench'] / GB:.2f} GB (pg_database_size)"
          + (f", small {sizes['bench_small'] / GB:.2f} GB" if small else "")
          + f", tiny {sizes['bench_tiny'] / 1e6:.1f} MB; best of {args.repeat} (tiny: best of 3); "
          + ("no bytecode cache" if args.no_bytecode_cache else "with a bytecode cache"))
    head = (f"{'method':<26}{'seconds':>9}{'stored bytes':>15}{'t/raw':>7}{'t/naive':>8}{'size/naive':>11}"
            f"{'py RSS MB':>10}{'pg_dump MB':>11}{'zstd MB':>8}")
    print_head(head)
    for row in rows.values():
        b = row.best
        big = row.method not in (SMALL, TINY)
        t_raw = f"{b.seconds / raw[row.level]:.2f}" if big and row.level in raw else "-"
        t_naive = f"{b.seconds / naive.best.seconds:.2f}" if big else "-"
        s_naive = f"{row.stored / naive.stored:.2f}" if big else "-"
        py, pgd = py_peak(b), b.peak(lambda k: k.endswith("pg_dump"))
        print(f"{row.method:<26}{b.seconds:>9.2f}{row.stored:>15,}{t_raw:>7}{t_naive:>8}{s_naive:>11}"
              f"{fmt_mb(py):>10}{fmt_mb(pgd):>11}{fmt_mb(b.peak_kib.get('zstd', 0)):>8}")
    print("t/raw: against the raw pipe of the same zstd level. py RSS: peak (VmHWM) of the CLI's python process, "
          "or of the uploader for raw/naive.")


def print_cpu(rows: dict[str, Row], startup: dict[str, float]) -> None:
    print()
    head2 = (f"{'CPU seconds during the run':<26}{'ours':>7}{'postgres':>9}{'s3 srv':>8}{'prefect':>8}"
             f"{'others':>8}{'machine':>8}{'in flow s':>10}{'API 503s':>9}")
    print_head(head2)
    for row in rows.values():
        b = row.best
        sc = b.services_cpu
        in_flow, locked = flow_cells(b)
        print(f"{row.method:<26}{b.cpu:>7.1f}{sc.get('postgres', 0):>9.1f}{sc.get('s3 server', 0):>8.1f}"
              f"{sc.get('prefect server', 0):>8.1f}{b.other_cpu:>8.1f}{b.machine_busy:>8.1f}{in_flow:>10}"
              f"{locked:>9}")
    print("ours: user+sys of the measured processes (CLI python + pg_dump, or pg_dump + zstd + uploader); "
          "others: the rest of the machine (other users' work); in flow: the flow run's own run time on the "
          "server (the rest of 'seconds' is process start, imports and exit); API 503s: requests the Prefect "
          "server answered 503 (SQLite 'database is locked'; the client retries after ~2 s).")
    for row in rows.values():
        if len(row.runs) > 1:
            times = [f"{r.seconds:.2f}" + (f" ({r.extra['503s']}× 503)" if r.extra.get("503s") else "")
                     for r in row.runs]
            print(f"  all runs of {row.method.strip()}: " + ", ".join(times))
    for label in (TINY, FLOW3):
        b = rows[label].best
        print(f"  task run times of the best {label.strip()}: "
              + ", ".join(f"{name} {secs:.2f}" for name, secs in b.extra["tasks"]))
    print("  wait4 ru_maxrss of the CLI (max of python and its reaped children): "
          + ", ".join(f"{row.method.strip()} {row.best.maxrss_kib.get('cli', 0) / 1024:.0f} MB"
                      for row in rows.values() if "cli" in row.best.maxrss_kib))
    print("  startup (best of 3): " + ", ".join(f"{k} {v:.2f} s" for k, v in startup.items()))


def print_targets(rows: dict[str, Row]) -> None:
    raw = {"1": rows[RAW1].best.seconds, "3": rows[RAW3].best.seconds}
    naive = rows[NAIVE]
    flow1, flow3, tiny = rows[FLOW1].best, rows[FLOW3].best, rows[TINY].best
    peaks = {r.method.strip(): r.best.peak_kib["cli"] / 1024 for r in rows.values() if "cli" in r.best.peak_kib}
    print()
    print("targets of the issue:")
    print(f"  flow@1 ≤ 1.10 × raw@1 (pg_dump -Z0 | zstd -1 -T0):  {flow1.seconds / raw['1']:.2f}×  "
          f"{verdict(flow1.seconds <= 1.10 * raw['1'])}   (default level: flow@3 / raw@3 = "
          f"{flow3.seconds / raw['3']:.2f}×)")
    print(f"  flow (default, zstd 3) ≤ 0.5 × naive time:         {flow3.seconds / naive.best.seconds:.2f}×  "
          f"{verdict(flow3.seconds <= 0.5 * naive.best.seconds)}   "
          f"(size {rows[FLOW3].stored / naive.stored:.2f}× naive; flow@1 time "
          f"{flow1.seconds / naive.best.seconds:.2f}×)")
    print("  peak RSS ≤ 200 MB and flat in DB size:             "
          + ", ".join(f"{k} {v:.0f} MB" for k, v in peaks.items())
          + f"  {verdict(max(peaks.values()) <= 200)}")
    print(f"  tiny-DB backup ≤ 3 s with a running server:        {tiny.seconds:.2f} s  "
          f"{verdict(tiny.seconds <= 3)}   "
          f"(runs: {', '.join(f'{r.seconds:.2f}' for r in rows[TINY].runs)})")


def main() -> int:
    args = parse_args()
    interrupt_on_sigterm()
    load_before, commit_before = loadavg(), git_state()
    print(f"backup benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB RAM, commit {commit_before}, "
          f"load average before: {load_before}", flush=True)
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="charhub-ops-bench-"))
        stack.callback(shutil.rmtree, tmp, True)
        # the Prefect server first (it needs ~15 s: it starts while the data is generated), the S3 server, the data
        server, api, server_home, s3, s3client = start_services(stack, tmp)
        cluster, sizes, small = make_databases(stack, args)
        log(f"waiting for the Prefect server … healthy after {wait_prefect(server, api, server_home):.1f} s more")

        cli_env, pg_env = bench_envs(tmp, s3, api, cluster, args.no_bytecode_cache)
        uploader = tmp / "uploader.py"
        uploader.write_text(UPLOADER)
        if not args.no_bytecode_cache:
            warm = run_measured([("py", [sys.executable, "-c", "import flows.backup, boto3"])], cli_env, cwd=ROOT)
            log(f"bytecode cache filled ({warm.seconds:.1f} s, not timed below)")
        methods = Methods(cluster=cluster, cli_env=cli_env, pg_env=pg_env, watch=service_pids(cluster, s3, server),
                          run_stats=flow_run_stats(api, server_home), s3client=s3client, uploader=uploader)
        methods.run_all(args.repeat, small)
        startup = measure_startup(cli_env)

        print_methods(methods.rows, sizes, small, args)
        print_cpu(methods.rows, startup)
        print_targets(methods.rows)
        print(f"load average before: {load_before}; after: {loadavg()}")
        if git_state() != commit_before:
            print(f"NOTE: the checkout changed during the run ({commit_before} → {git_state()}): each CLI run used "
                  "the code of its own start")
    return 0


if __name__ == "__main__":
    run_main(main)
