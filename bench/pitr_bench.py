"""PITR benchmark: `pitr restore --latest` vs the logical restore of the same database, side by side, and the RPO.

    .venv/bin/python bench/pitr_bench.py [--size-gb 2.5] [--jobs 2] [--rpo-seconds 100] [--skip-rpo]

One run (see bench/README.md):

1. a throwaway cluster archiving through pgBackRest (tests/harness/pitr.py: ``archive_mode=on``,
   ``archive_timeout=60``) gets a database ``bench`` of ~``--size-gb`` GB from bench/datagen.py; then, untimed,
   ``charhub-ops pitr setup`` + ``pitr backup --type full`` (posix repository) and ``charhub-ops backup`` into a
   local logical repository (``file://``), against a real ``prefect server``;
2. times, one after the other on the same machine (best of ``--repeat``; pitr first, so that it replays only the
   WAL written since its backup — later rounds take an untimed ``pitr backup --type incr`` first):
   * ``logical restore``: ``charhub-ops restore --from file://… --database-url …/restored_N --json`` (new database,
     pg_restore -j, checked against the manifest; the cluster archives the WAL it writes, as production would);
   * ``pitr restore``: ``charhub-ops pitr restore --latest --into <new dir> --json`` (the whole cluster's files);
   * ``pitr restore + recovery``: the same plus starting it on a free port until recovery ended and it accepts
     connections (:class:`charhub_ops.pitr.scratch.LocalScratch`) — what an operator waits for;
3. RPO (unless ``--skip-rpo``): a writer commits a row every 0.5 s for ``--rpo-seconds``, the instance is killed
   (immediate stop, data directory removed), ``pitr restore --latest`` is started: the writes lost are the rows
   committed after the newest row present — their span is the measured RPO (goal ≤ 60 s, ``archive_timeout``);
4. prints the figures with the machine's load average before and after, and removes everything it started.

Measurement: bench/measure.py (wall time, CPU of the CLI and of the machine: "others" is everyone else's work).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import measure
import psycopg
from datagen import db_size, generate
from measure import CLI, GB, ROOT, log

from charhub_ops.pgurl import parse_pg_url
from charhub_ops.pitr.restore import data_owner
from charhub_ops.pitr.scratch import LocalScratch
from charhub_ops.settings import PitrSettings
from tests.harness.pitr import PitrCluster, start_archiving_cluster

CIPHER = "bench-pitr-passphrase"


class BenchCluster(PitrCluster):
    """The archiving cluster with what bench/datagen.py expects of a cluster."""

    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-gb", type=float, default=2.5)
    p.add_argument("--jobs", type=int, default=2, help="loading sessions of the generator")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--rpo-seconds", type=float, default=100.0)
    p.add_argument("--skip-rpo", action="store_true")
    return p.parse_args()


def start_cluster(stack: ExitStack) -> BenchCluster:
    raw = start_archiving_cluster("bench")
    cluster = BenchCluster(base=raw.base, port=raw.port, bin=raw.bin, stanza=raw.stanza)
    stack.callback(cluster.remove)
    return cluster


def envs(cluster: PitrCluster, tmp: Path, api: str, logical: Path) -> dict[str, str]:
    cli_env, _ = measure.bench_envs(tmp, measure.S3Server("http://127.0.0.1:9", None), api, cluster, False)
    return {**cli_env, **cluster.settings_env(), "CHARHUB_OPS_PITR_CIPHER_PASS": CIPHER,
            "CHARHUB_OPS_REPOSITORY": f"file://{logical}", "CHARHUB_OPS_WORK_DIR": str(tmp)}


def cli(env: dict[str, str], *argv: str) -> measure.Run:
    return measure.run_measured([("cli", [CLI, *argv])], env, cwd=ROOT, timeout=7200)


def prepare(cluster: BenchCluster, env: dict[str, str], args: argparse.Namespace) -> int:
    seconds = generate(cluster, "bench", int(args.size_gb * GB), args.jobs)
    size = db_size(cluster, "bench")
    log(f"database bench: {size / GB:.2f} GB in {seconds:.0f} s")
    for argv in (("pitr", "setup"), ("pitr", "backup", "--type", "full"),
                 ("backup", "--database-url", cluster.url("bench"), "--json")):
        run = cli(env, *argv)
        log(f"{' '.join(argv[:3])}: {run.seconds:.1f} s (not timed)")
    return size


def logical_restore(cluster: BenchCluster, env: dict[str, str], n: int) -> measure.Run:
    run = cli(env, "restore", "--database-url", cluster.url(f"restored_{n}"), "--json")
    with cluster.connect() as conn:
        conn.execute(f'DROP DATABASE "restored_{n}"')
        conn.execute("CHECKPOINT")
    return run


def pitr_restore(cluster: BenchCluster, env: dict[str, str], work: Path, n: int) -> tuple[measure.Run, float]:
    """(the CLI's run, seconds from the start of recovery until it accepts connections, promoted)."""
    into = work / f"pitr_{n}"
    run = cli(env, "pitr", "restore", "--latest", "--into", str(into), "--json")
    scratch = LocalScratch(into, data_owner(PitrSettings(pg_path=str(cluster.datadir))))
    started = time.perf_counter()
    try:
        scratch.start(parse_pg_url(cluster.url()))
        return run, time.perf_counter() - started
    finally:
        scratch.remove()


def measure_rpo(cluster: BenchCluster, env: dict[str, str], work: Path, seconds: float) -> str:
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE rpo (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    stop = threading.Event()

    def writer() -> None:
        try:
            with cluster.connect() as conn:
                while not stop.is_set():
                    conn.execute("INSERT INTO rpo DEFAULT VALUES")
                    time.sleep(0.5)
        except psycopg.Error:
            pass  # the kill

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(seconds)
    killed = time.time()
    cluster.kill()  # the writer's next INSERT fails: it stops with the instance
    stop.set()
    thread.join(5)
    into = work / "rpo"
    cli(env, "pitr", "restore", "--latest", "--into", str(into))
    scratch = LocalScratch(into, data_owner(PitrSettings(pg_path=str(cluster.base))))
    try:
        scratch.start(parse_pg_url(cluster.url()))
        with psycopg.connect(scratch.url(parse_pg_url(cluster.url())).conninfo) as conn:
            rows, newest = conn.execute("SELECT count(*), max(at) FROM rpo").fetchone()
    finally:
        scratch.remove()
    lost = killed - newest.timestamp()
    return (f"RPO: writes every 0.5 s for {seconds:.0f} s, then killed: the newest row restored was committed "
            f"{lost:.1f} s before the kill ({rows} rows restored; goal <= 60 s, archive_timeout = 60)")


def main() -> int:
    args = parse_args()
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="bench-pitr-"))
        tmp.chmod(0o755)
        stack.callback(shutil.rmtree, tmp, True)
        server_home = tmp / "prefect-server"
        server_home.mkdir()
        server, api = measure.start_prefect_server(server_home)
        stack.callback(measure.stop_group, server)
        cluster = start_cluster(stack)
        (tmp / "logical").mkdir()
        env = envs(cluster, tmp, api, tmp / "logical")
        measure.wait_prefect(server, api, server_home)
        load_before = measure.loadavg()
        size = prepare(cluster, env, args)
        logical, files, recovery = [], [], []
        for n in range(args.repeat):
            if n:  # the last round's logical restore wrote WAL: a backup bounds what recovery replays, as in production
                cli(env, "pitr", "backup", "--type", "incr")
            run, seconds = pitr_restore(cluster, env, tmp, n)
            files.append(run.seconds)
            recovery.append(run.seconds + seconds)
            logical.append(logical_restore(cluster, env, n).seconds)
            log(f"round {n + 1}: logical {logical[-1]:.1f} s, pitr {files[-1]:.1f} s (+ recovery "
                f"{recovery[-1]:.1f} s)")
        rpo = "RPO: skipped" if args.skip_rpo else measure_rpo(cluster, env, tmp, args.rpo_seconds)
        print_report(size, min(logical), min(files), min(recovery), rpo, load_before, measure.loadavg(), args)
    return 0


def print_report(size: int, logical: float, files: float, recovery: float, rpo: str, load0: str, load1: str,
                 args: argparse.Namespace) -> None:
    print(json.dumps({"database_gb": round(size / GB, 2), "logical_restore_s": round(logical, 1),
                      "pitr_restore_s": round(files, 1), "pitr_restore_and_recovery_s": round(recovery, 1),
                      "ratio_files": round(files / logical, 2), "ratio_with_recovery": round(recovery / logical, 2),
                      "repeat": args.repeat, "load_before": load0, "load_after": load1,
                      "commit": measure.git_state()}, indent=2))
    print(f"pitr restore --latest {files:.1f} s = {files / logical:.2f}x the logical restore ({logical:.1f} s) "
          f"of the same {size / GB:.2f} GB database; with recovery until it accepts connections {recovery:.1f} s "
          f"= {recovery / logical:.2f}x (goal <= 0.35x)")
    print(rpo)


if __name__ == "__main__":
    measure.run_main(main)
