"""Restore benchmark: restore (both modes) and verify flows vs a raw download | zstd -d | pg_restore, one S3 server.

    .venv/bin/python bench/restore_bench.py [--size-gb 0.75] [--repeat 1] [--profile] [--keep]

One run (see bench/README.md):

1. builds a throwaway PostgreSQL cluster with a database of ~``--size-gb`` GB (bench/datagen.py's generator,
   as backup_bench.py: chat text, jsonb events, random bytea, btree indexes), starts a moto S3 server and a real
   ``prefect server``, and backs the database up once with ``charhub-ops backup --to s3://bench/r`` (not timed);
2. times, against the same S3 object, in rounds (best of ``--repeat``):
   * ``raw pipe``: ``createdb`` + ``download | zstd -d | pg_restore -d`` (a pipe: pg_restore cannot use -j);
   * ``raw file``: the raw equivalent of what the flow does: download to a file (boto3 ``download_fileobj``),
     ``zstd -d`` to a file, ``createdb``, ``pg_restore -j <min(4, CPUs)>``;
   * ``raw file (GET)``: the same with one streaming GET instead of ``download_fileobj`` (whose 8 MiB ranged GETs
     are slow on moto, see DOWNLOADER);
   * ``flow restore, stream``: ``charhub-ops restore --from s3://bench/r --database-url …/restored_N --json`` with
     ``CHARHUB_OPS_RESTORE_MODE=stream`` (GET → SHA-256 → zstd → pg_restore stdin, one job: the raw pipe's shape);
   * ``flow restore, file``: the same with ``CHARHUB_OPS_RESTORE_MODE=file`` (verified file, then pg_restore -j: the
     raw file variant's shape);
   * ``flow verify``: ``charhub-ops verify --from s3://bench/r --database-url …/postgres --backup <id> --json``
     in the default ``auto`` mode (restore into a scratch database, compare with the manifest, drop it, record the
     verdict);
   restored databases are dropped (and a CHECKPOINT taken) after each method, untimed;
3. prints seconds, ratios (flow vs both raw variants, verify vs restore), peak RSS of the CLI process and of its
   pg_restore, CPU seconds by component, the flows' task run times from the Prefect API and the raw steps;
4. with ``--profile``: calls the engine functions (``charhub_ops.restore.datapath.fetch_verified``, ``pg_restore``,
   ``pg_restore_stream``, ``charhub_ops.restore.engine.check_restored``) directly under cProfile, next to a plain
   single-GET read of the object, then runs the restore CLI once more under ``python -m cProfile`` (imports /
   flow call / rest / outside the profiled main thread);
5. stops everything it started (servers, cluster, temp dirs, downloaded files), also on failure or Ctrl-C.

Measurement (wall time, VmHWM polling, wait4 rusage, CPU of the service process trees, the private bytecode
cache) and services are bench/measure.py's, the generator bench/datagen.py's (both shared with backup_bench.py).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import measure
from datagen import db_size, generate, open_cluster
from measure import BUCKET, CLI, GB, ROOT, PgCluster, Row, Run, log

REPO = f"s3://{BUCKET}/r"
JOBS = min(4, os.cpu_count() or 1)  # what the flow's pg_restore uses (restore_jobs = 0)
STEP_TIMEOUT = 1800  # seconds; a stalled step fails the run instead of hanging it

# the same client settings as the flow's storage (R2-safe checksums) and backup_bench's uploader.
# "get": one streaming GET (what the flow's storage.open does); "transfer": s3transfer download_fileobj (8 MiB
# ranged GETs on 4 threads) -- only into a file: into a pipe (non-seekable) it stalled after 80 MiB of a 250 MB
# object here and never finished (s3transfer 0.19.3 + moto 5.2.5, reproduced outside this script), so the pipe
# variant uses "get".
DOWNLOADER = '''\
import shutil, sys, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
bucket, key, mode = sys.argv[1:4]
client = boto3.client("s3", config=Config(request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required", max_pool_connections=10))
out = open(sys.argv[4], "wb") if len(sys.argv) > 4 else sys.stdout.buffer
if mode == "transfer":
    cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4)
    client.download_fileobj(bucket, key, out, Config=cfg)
else:
    shutil.copyfileobj(client.get_object(Bucket=bucket, Key=key)["Body"], out, 1 << 20)
out.flush()
'''

RAW_PIPE = "raw   GET|zstd -d|pg_restore"
RAW_FILE = f"raw   file: dl, zstd -d, pg_restore -j{JOBS}"
RAW_FILE_GET = f"raw   file: GET, zstd -d, pg_restore -j{JOBS}"
FLOW = "flow  restore CLI, stream"
FLOW_FILE = f"flow  restore CLI, file -j{JOBS}"
VERIFY = "flow  verify CLI (auto)"
MODES = {FLOW: "stream", FLOW_FILE: "file", VERIFY: "auto"}
RESTORE_FLAGS = ["--exit-on-error", "--no-password"]  # of the raw variants' pg_restore


def pg_restore_peak(run: Run) -> int:
    """VmHWM (KiB) of the pg_restore leader (a child of the CLI, or a raw stage)."""
    return run.peak(lambda k: k.endswith("pg_restore"))


def user_databases(cluster: PgCluster) -> list[str]:
    with cluster.connect() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate "
                                           "AND datname NOT IN ('postgres', 'bench') ORDER BY 1")]


def drop_and_checkpoint(cluster: PgCluster, names: list[str]) -> None:
    with cluster.connect() as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute("CHECKPOINT")


def drop_restored(cluster: PgCluster) -> None:
    """Drop every database but postgres and bench (restored ones, leftovers of an interrupted run)."""
    drop_and_checkpoint(cluster, user_databases(cluster))


def profile_engine(cluster: PgCluster, backup_id: str, work: Path, top: int = 10) -> list[str]:
    """The engine functions of the restore pipeline called directly (no Prefect), each under cProfile."""
    from charhub_ops.backup import catalog
    from charhub_ops.pgurl import parse_pg_url
    from charhub_ops.postgres import make_tools, open_session
    from charhub_ops.restore import datapath, engine
    from charhub_ops.storage import S3Options, open_storage

    storage = open_storage(REPO, S3Options())  # endpoint and credentials from the environment, as the CLI's
    manifest = next(m for m in catalog.list_backups(storage) if m.backup_id == backup_id)
    dest = work / "engine.pgc"
    target = "restored_engine"
    url = parse_pg_url(cluster.url(target))
    out: list[str] = []

    def profiled(name: str, fn) -> float:
        prof = cProfile.Profile()
        started = time.perf_counter()
        prof.enable()
        try:
            fn()
        finally:
            prof.disable()
        seconds = time.perf_counter() - started
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
        lines = [ln for ln in text.getvalue().splitlines() if ln.strip()]
        start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
        out.append(f"  {name}: {seconds:.2f} s wall, profile by tottime:")
        out.extend("    " + ln[:150] for ln in lines[start:start + top + 1])
        return seconds

    def plain_get() -> None:  # the same single GET the flow makes, bytes thrown away
        with storage.open(manifest.dump.key) as raw:
            while raw.read(datapath.CHUNK):
                pass

    def check() -> None:
        with open_session(url, None) as session:
            result = engine.check_restored(session, manifest, with_hashes=True)
        if not result.ok:
            raise RuntimeError(f"check_restored: {result.mismatches[:3]}")
        out.append(f"  check_restored: {result.tables} tables, {result.rows:,} rows, {result.hashed} content hashes")

    try:
        drop_and_checkpoint(cluster, [target])
        profiled("plain GET of the object (storage.open + read 1 MiB)", plain_get)
        profiled("fetch_verified (GET + sha256 + zstd → file)",
                 lambda: datapath.fetch_verified(storage, manifest, dest))
        with cluster.connect() as conn:
            conn.execute(f'CREATE DATABASE "{target}"')
        tools = make_tools(url, None, str(cluster.bin))
        profiled(f"pg_restore (engine, -j{JOBS})", lambda: datapath.pg_restore(tools, dest, 0, False))
        profiled("check_restored (row counts + content hashes)", check)
        drop_and_checkpoint(cluster, [target])
        with cluster.connect() as conn:
            conn.execute(f'CREATE DATABASE "{target}"')

        def stream() -> None:
            with datapath.VerifiedReader(storage, manifest) as source:
                datapath.pg_restore_stream(tools, source)

        profiled("pg_restore_stream (GET + sha256 + zstd → pg_restore stdin; main thread waits)", stream)
    finally:
        dest.unlink(missing_ok=True)
        drop_and_checkpoint(cluster, [target])
    return out


def cli_profile(path: Path, seconds: float) -> list[str]:
    """Where the restore CLI's wall time goes, from a cProfile of its main thread (cumulative times)."""
    st = pstats.Stats(str(path))

    def cum(suffix: str, func: str) -> float:
        return max((v[3] for (file, _, name), v in st.stats.items() if file.endswith(suffix) and name == func),
                   default=0.0)

    imports = cum("flows/restore.py", "<module>")
    call = cum("prefect/flows.py", "__call__")
    body = cum("flows/restore.py", "restore_flow")
    tasks = cum("prefect/task_engine.py", "run_task_sync")
    engines = {k: cum(f"charhub_ops/{m}.py", k) for m, k in (
        ("restore/datapath", "fetch_verified"), ("restore/datapath", "pg_restore"),
        ("restore/datapath", "pg_restore_stream"), ("restore/engine", "check_restored"))}
    return [
        f"  the restore CLI under cProfile: {seconds:.2f} s wall (profiler overhead included), of which the main "
        f"thread's Python {st.total_tt:.2f} s:",
        f"    import flows.restore (Prefect, pydantic models, …)  {imports:5.2f} s",
        f"    restore_flow(...) call                             {call:5.2f} s = flow body {body:.2f} s (task runs "
        f"{tasks:.2f} s: " + ", ".join(f"{k} {v:.2f}" for k, v in engines.items())
        + f", the rest is Prefect's task engine and the other tasks) + engine around the body {call - body:.2f} s",
        f"    rest of the main thread (typer, CLI checks, …)     {st.total_tt - imports - call:5.2f} s",
        f"    outside the profiled main thread (interpreter start; at exit: thread shutdown, atexit, interpreter "
        f"finalization) {seconds - st.total_tt:.2f} s",
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=0.75, help="size of the generated database (GB, 10^9)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the four methods (best is kept)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel sessions for generation")
    parser.add_argument("--profile", action="store_true",
                        help="also run the engine functions directly under cProfile (one more restore)")
    parser.add_argument("--keep", action="store_true", help="save the generated cluster in --cache-dir and reuse it")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "charhub-ops-restore-bench")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="run the python processes with PYTHONDONTWRITEBYTECODE=1 as this environment does")
    return parser.parse_args()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


@dataclass
class Methods(measure.Setup):
    """The measured methods against one backup (``meta``) on the S3 server; every run is recorded in ``rows``."""
    work: Path
    downloader: Path
    meta: dict
    rows: dict[str, Row] = field(default_factory=lambda: {m: Row(m, []) for m in (
        RAW_PIPE, RAW_FILE, RAW_FILE_GET, FLOW, FLOW_FILE, VERIFY)})
    restored_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def dl(self) -> list[str]:
        """The downloader's command line; + "get" / "transfer" [+ file]."""
        bucket, key = self.meta["key"].removeprefix("s3://").split("/", 1)
        return [sys.executable, str(self.downloader), bucket, key]

    def cli(self, argv: list[str], mode: str) -> Run:
        env = {**self.cli_env, "CHARHUB_OPS_RESTORE_MODE": mode}
        run = measure.run_measured([("cli", [CLI, *argv, "--json"])], env, cwd=ROOT, watch=self.watch,
                                   timeout=STEP_TIMEOUT)
        stats = self.run_stats()
        run.extra = {"result": json.loads(run.stdout), **stats}
        return run

    def record(self, method: str, fn: Callable[[], Run], dbname: str | None) -> None:
        try:
            run = fn()
            if dbname:
                self.restored_sizes[method] = db_size(self.cluster, dbname)
        finally:
            for f in self.work.iterdir():
                f.unlink()
            drop_restored(self.cluster)
        self.rows[method].runs.append(run)
        peak = run.peak_kib.get("cli", run.peak_kib.get("download", 0))
        pgr = pg_restore_peak(run)
        log(f"  {method:<40} {run.seconds:7.2f} s  py peak {peak / 1024:4.0f} MB  pg_restore {pgr / 1024:3.0f} MB"
            f"  cpu {run.cpu:5.1f} s  other users {run.other_cpu:5.1f} cpu-s  load {measure.loadavg()}")

    def raw_pipe(self, db: str) -> Run:
        pg_restore = str(self.cluster.bin / "pg_restore")
        return measure.run_chain([
            ("createdb", [("createdb", [str(self.cluster.bin / "createdb"), db])], self.pg_env),
            ("GET|zstd -d|pg_restore", [("download", [*self.dl, "get"]), ("zstd", ["zstd", "-d", "-q", "-c"]),
                                       ("pg_restore", [pg_restore, *RESTORE_FLAGS, "-d", db])], self.pg_env),
        ], self.watch, STEP_TIMEOUT)

    def raw_file(self, db: str, mode: str) -> Run:
        zst, pgc = self.work / "dump.pgc.zst", self.work / "dump.pgc"
        pg_restore, env = str(self.cluster.bin / "pg_restore"), self.pg_env
        return measure.run_chain([
            ("download_fileobj" if mode == "transfer" else "GET", [("download", [*self.dl, mode, str(zst)])], env),
            ("zstd -d", [("zstd", ["zstd", "-d", "-q", "-f", str(zst), "-o", str(pgc)])], env),
            ("createdb", [("createdb", [str(self.cluster.bin / "createdb"), db])], env),
            (f"pg_restore -j{JOBS}", [("pg_restore", [pg_restore, *RESTORE_FLAGS, "-j", str(JOBS), "-d", db,
                                                      str(pgc)])], env),
        ], self.watch, STEP_TIMEOUT)

    def round(self, n: int) -> None:
        url = self.cluster.url
        self.record(RAW_PIPE, partial(self.raw_pipe, f"restored_raw_{n}"), f"restored_raw_{n}")
        self.record(FLOW, partial(self.cli, ["restore", "--from", REPO, "--database-url", url(f"restored_{n}")],
                                  MODES[FLOW]), f"restored_{n}")
        self.record(RAW_FILE_GET, partial(self.raw_file, f"restored_rawget_{n}", "get"), f"restored_rawget_{n}")
        self.record(FLOW_FILE, partial(self.cli, ["restore", "--from", REPO, "--database-url",
                                                  url(f"restored_file_{n}")], MODES[FLOW_FILE]),
                    f"restored_file_{n}")
        self.record(RAW_FILE, partial(self.raw_file, f"restored_rawfile_{n}", "transfer"), f"restored_rawfile_{n}")
        self.record(VERIFY, partial(self.cli, ["verify", "--from", REPO, "--database-url", url("postgres"),
                                               "--backup", self.meta["backup_id"]], MODES[VERIFY]), None)

    def download_only(self) -> dict[str, float]:
        log("download alone, into a file (best of 2 each) …")
        download_only: dict[str, float] = {}
        for mode in ("transfer", "get"):
            times = []
            for _ in range(2):
                times.append(measure.run_measured([("download", [*self.dl, mode, str(self.work / "dl.bin")])],
                                                  self.pg_env, timeout=STEP_TIMEOUT).seconds)
                (self.work / "dl.bin").unlink()
            download_only[mode] = min(times)
        return download_only


def backup_once(cluster: PgCluster, cli_env: dict[str, str]) -> dict:
    """``charhub-ops backup --json`` of bench into REPO (untimed): its result."""
    backup = measure.run_measured([("cli", [CLI, "backup", "--database-url", cluster.url("bench"), "--to", REPO,
                                            "--json"])], cli_env, cwd=ROOT)
    meta = json.loads(backup.stdout)
    log(f"backup {meta['backup_id']}: {meta['size_bytes']:,} bytes stored ({meta['raw_size_bytes']:,} raw dump), "
        f"{meta['tables']} tables, {meta['rows']:,} rows, in {backup.seconds:.1f} s (not timed)")
    return meta


def profile_all(cluster: PgCluster, backup_id: str, work: Path, tmp: Path, cli_env: dict[str, str]) -> list[str]:
    """--profile: the engine functions, then the restore CLI, under cProfile."""
    log("engine functions under cProfile …")
    profile_lines = profile_engine(cluster, backup_id, work)
    log("the restore CLI under cProfile …")
    prof_out = tmp / "cli.prof"
    run = measure.run_measured([("cli", [sys.executable, "-m", "cProfile", "-o", str(prof_out), CLI, "restore",
                                         "--from", REPO, "--database-url", cluster.url("restored_prof"), "--json"])],
                               cli_env, cwd=ROOT, timeout=STEP_TIMEOUT)
    drop_restored(cluster)
    return profile_lines + cli_profile(prof_out, run.seconds)


def prepare(stack: ExitStack, args: argparse.Namespace, tmp: Path, work: Path) -> tuple[Methods, int, dict[str, str]]:
    """Services, cluster and data, the backup: (the methods, the database's size, the CLI's environment)."""
    server, api, server_home, s3, _ = measure.start_services(stack, tmp)

    def fill(cluster: PgCluster) -> None:
        secs = generate(cluster, "bench", int(args.size_gb * GB), args.jobs)
        log(f"generated in {secs:.1f} s")

    cluster = open_cluster(stack, args, {"size_gb": args.size_gb}, fill, tidy=drop_restored)
    size = db_size(cluster, "bench")
    log(f"pg_database_size(bench) = {size:,} bytes")
    log(f"waiting for the Prefect server … healthy after {measure.wait_prefect(server, api, server_home):.1f} s "
        "more")
    cli_env, pg_env = measure.bench_envs(tmp, s3, api, cluster, args.no_bytecode_cache,
                                         CHARHUB_OPS_WORK_DIR=str(work))
    os.environ["AWS_ENDPOINT_URL_S3"] = s3.endpoint  # for --profile (in this process)
    downloader = tmp / "download.py"
    downloader.write_text(DOWNLOADER)
    watch = measure.service_pids(cluster, s3, server)
    if not args.no_bytecode_cache:
        warm = measure.run_measured([("py", [sys.executable, "-c", "import flows.restore, flows.verify, "
                                                                    "flows.backup, boto3"])], cli_env, cwd=ROOT)
        log(f"bytecode cache filled ({warm.seconds:.1f} s, not timed below)")
    meta = backup_once(cluster, cli_env)
    methods = Methods(cluster=cluster, cli_env=cli_env, pg_env=pg_env, watch=watch,
                      run_stats=measure.flow_run_stats(api, server_home), work=work, downloader=downloader, meta=meta)
    return methods, size, cli_env


def print_table(rows: dict[str, Row], size: int, meta: dict, args: argparse.Namespace) -> None:
    pipe, file_, fget = (rows[m].best for m in (RAW_PIPE, RAW_FILE, RAW_FILE_GET))
    print()
    print(f"results — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, commit {measure.git_state()}; "
          f"database {size / GB:.2f} GB (pg_database_size), backup {meta['size_bytes'] / 1e6:.0f} MB stored "
          f"(zstd) / {meta['raw_size_bytes'] / 1e6:.0f} MB dump; best of {args.repeat}; "
          + ("no bytecode cache" if args.no_bytecode_cache else "with a bytecode cache"))
    head = (f"{'method':<41}{'seconds':>8}{'t/pipe':>7}{'t/file':>7}{'t/fGET':>7}{'py RSS MB':>10}"
            f"{'pg_restore MB':>14}{'ours':>6}{'postgres':>9}{'s3 srv':>7}{'prefect':>8}{'others':>7}"
            f"{'in flow s':>10}{'503s':>5}")
    measure.print_head(head)
    for row in rows.values():
        b = row.best
        sc = b.services_cpu
        py = b.peak_kib.get("cli", b.peak_kib.get("download", 0))
        pgr = pg_restore_peak(b)
        in_flow, locked = measure.flow_cells(b)
        print(f"{row.method:<41}{b.seconds:>8.2f}{b.seconds / pipe.seconds:>7.2f}{b.seconds / file_.seconds:>7.2f}"
              f"{b.seconds / fget.seconds:>7.2f}"
              f"{measure.fmt_mb(py):>10}{measure.fmt_mb(pgr):>14}{b.cpu:>6.1f}{sc.get('postgres', 0):>9.1f}"
              f"{sc.get('s3 server', 0):>7.1f}{sc.get('prefect server', 0):>8.1f}{b.other_cpu:>7.1f}{in_flow:>10}"
              f"{locked:>5}")
    print("t/pipe, t/file, t/fGET: against the raw pipe, the raw file variant (download_fileobj) and the raw file "
          "variant with one streaming GET. py RSS: peak (VmHWM) of the CLI's python "
          "process (of the downloader for raw); pg_restore MB: of the pg_restore leader. CPU seconds: ours = the "
          "measured processes with their children (pg_restore and its workers), others = the rest of the machine; "
          "in flow: the flow run's run time on the Prefect server; 503s: API requests answered 503.")


def print_details(methods: Methods, size: int, download_only: dict[str, float], startup: dict[str, float],
                  profile_lines: list[str]) -> None:
    rows, restored_sizes = methods.rows, methods.restored_sizes
    pipe, file_, fget, flow, flow_file, verify = (rows[m].best for m in (RAW_PIPE, RAW_FILE, RAW_FILE_GET, FLOW,
                                                                          FLOW_FILE, VERIFY))
    for row in rows.values():
        if len(row.runs) > 1:
            print(f"  all runs of {row.method.strip()}: " + ", ".join(f"{r.seconds:.2f}" for r in row.runs))
    for label, b in (("raw pipe", pipe), ("raw file", file_), ("raw file (GET)", fget)):
        print(f"  steps of the best {label}: " + ", ".join(f"{n} {s:.2f}" for n, s in b.extra["steps"]))
    for label, b in (("restore (stream)", flow), ("restore (file)", flow_file), ("verify", verify)):
        print(f"  task run times of the best {label} flow: "
              + ", ".join(f"{name} {secs:.2f}" for name, secs in b.extra["tasks"]))
    for label, b in (("restore (stream)", flow), ("restore (file)", flow_file), ("verify", verify)):
        tasks = dict(b.extra["tasks"])
        data = {k: tasks.get(k, 0.0) for k in ("fetch-and-verify", "restore-new-database", "check-copy")}
        other = sum(tasks.values()) - sum(data.values())
        print(f"  where the best {label} flow's {b.seconds:.2f} s went: outside the flow run (process start, "
              f"imports, CLI checks, flow-run setup/teardown, exit) {b.seconds - b.extra['in_flow']:.2f} s; "
              + ", ".join(f"{k} {v:.2f}" for k, v in data.items())
              + f"; other tasks {other:.2f}; between tasks {b.extra['in_flow'] - sum(tasks.values()):.2f}")
    print("  wait4 ru_maxrss of the CLI (python and its reaped children, i.e. pg_restore): "
          + ", ".join(f"{row.method.strip()} {row.best.maxrss_kib['cli'] / 1024:.0f} MB"
                      for row in rows.values() if "cli" in row.best.maxrss_kib))
    print("  restored database sizes (pg_database_size): "
          + ", ".join(f"{m.strip()} {s / GB:.3f} GB" for m, s in restored_sizes.items())
          + f"; source {size / GB:.3f} GB")
    print(f"  download alone into a file (python start included): download_fileobj (8 MiB ranges × 4 threads) "
          f"{download_only['transfer']:.2f} s, one streaming GET {download_only['get']:.2f} s")
    print("  startup (best of 3): " + ", ".join(f"{k} {v:.2f} s" for k, v in startup.items()))
    if profile_lines:
        print("engine functions called directly (no Prefect), cProfile:")
        print("\n".join(profile_lines))


def print_targets(rows: dict[str, Row]) -> None:
    pipe, file_, fget, flow, flow_file, verify = (rows[m].best for m in (RAW_PIPE, RAW_FILE, RAW_FILE_GET, FLOW,
                                                                          FLOW_FILE, VERIFY))
    print()
    print("targets of the issue:")
    best = min(flow, flow_file, key=lambda r: r.seconds)
    print(f"  restore flow ≤ 1.15 × raw GET|zstd -d|pg_restore:       {best.seconds / pipe.seconds:.2f}×  "
          f"{measure.verdict(best.seconds <= 1.15 * pipe.seconds)}   (stream {flow.seconds / pipe.seconds:.2f}×, "
          f"file {flow_file.seconds / pipe.seconds:.2f}×; stream vs the raw pipe, file vs the raw file variant "
          f"with one GET: {flow.seconds / pipe.seconds:.2f}× / {flow_file.seconds / fget.seconds:.2f}×)")
    print(f"  verify ≤ 1.3 × a plain restore (the restore flow):      {verify.seconds / flow.seconds:.2f}×  "
          f"{measure.verdict(verify.seconds <= 1.3 * flow.seconds)}   "
          f"(vs raw pipe {verify.seconds / pipe.seconds:.2f}×, "
          f"vs raw file {verify.seconds / file_.seconds:.2f}× / {verify.seconds / fget.seconds:.2f}×)")
    print("  peak RSS of the CLI python process: "
          + ", ".join(f"{m.strip()} {rows[m].best.peak_kib['cli'] / 1024:.0f} MB"
                      for m in (FLOW, FLOW_FILE, VERIFY)))


def main() -> int:
    args = parse_args()
    measure.interrupt_on_sigterm()
    uptime_before, commit_before = uptime(), measure.git_state()
    print(f"restore benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, commit "
          f"{commit_before}; uptime before: {uptime_before}", flush=True)
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="charhub-ops-restore-bench-"))
        stack.callback(shutil.rmtree, tmp, True)
        work = tmp / "work"  # the flow's CHARHUB_OPS_WORK_DIR and the raw file variant's downloads
        work.mkdir()
        methods, size, cli_env = prepare(stack, args, tmp, work)
        for n in range(1, args.repeat + 1):
            log(f"round {n}/{args.repeat}: raw pipe, flow restore (stream), raw file (GET), flow restore (file), "
                "raw file (download_fileobj), flow verify …")
            methods.round(n)
        download_only = methods.download_only()
        startup = {label: min(measure.run_measured([("py", [sys.executable, "-c", code])], cli_env,
                                                   cwd=ROOT).seconds for _ in range(3))
                   for label, code in (("python -c pass", "pass"), ("import flows.restore", "import flows.restore"))}
        profile_lines = (profile_all(methods.cluster, methods.meta["backup_id"], work, tmp, cli_env)
                         if args.profile else [])
        uptime_after = uptime()
        print_table(methods.rows, size, methods.meta, args)
        print_details(methods, size, download_only, startup, profile_lines)
        print_targets(methods.rows)
        print(f"uptime before: {uptime_before}")
        print(f"uptime after:  {uptime_after}")
        if measure.git_state() != commit_before:
            print(f"NOTE: the checkout changed during the run ({commit_before} → {measure.git_state()})")
    return 0


if __name__ == "__main__":
    measure.run_main(main)
