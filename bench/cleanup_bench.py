"""Cleanup benchmark: expired rows deleted in batches vs one single DELETE, side by side, with a writer.

    .venv/bin/python bench/cleanup_bench.py [--rows 1000000] [--fresh 250000] [--batch 5000] [--pause 0]
        [--pause-ratio 0.1] [--max-batch 50000] [--target-batch-seconds 0.1] [--sync-commit] [--repeat 3]
        [--shared-buffers 32MB] [--fsync on]

Starts a throwaway PostgreSQL cluster (tests/harness) and restarts it with ``--shared-buffers`` and ``--fsync``
(default 32MB and on, synchronous_commit on: the table is larger than shared_buffers and each commit is flushed),
builds a CharHub ``UsageLog`` (text ids, timestamp(3), index on the timestamp) with ``--rows`` expired processed
rows and ``--fresh`` recent ones (not timed), then for each method: a concurrent writer inserts new rows and
updates random *expired* rows (the ones being deleted) while the rows go; the writer's worst statement time is its
worst wait. Methods: the cleanup's batched deleter (charhub_ops.cleanup.rows at its defaults: the sweep ``auto``
chooses, lock_timeout 0.2 s, statement_timeout 5 s, batches from ``--batch`` rows growing to ``--max-batch`` while
a full one takes under half ``--target-batch-seconds``, pause ``--pause-ratio`` × the batch's duration, at least
``--pause``, commits without waiting for the WAL flush unless ``--sync-commit``); the same forced onto the index
sweep; ``DELETE … WHERE "timestamp" < cutoff AND processed`` in one statement; and the
writer alone for 2 s with nothing deleted (its own waits: commits, the machine). The table is rebuilt between
methods. Targets: batched throughput ≥ 0.5× the single DELETE at the defaults, the writer's
worst wait ≤ 100 ms. The load average before and after is printed (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg
from measure import PgCluster, loadavg, pg_cluster, pg_ctl  # first: it puts the repository root on sys.path

from charhub_ops.cleanup.policy import PolicyFile
from charhub_ops.cleanup.rows import RowOptions, count_matching, delete_expired
from charhub_ops.cleanup.run import plan_policies
from tests.harness.usage_writer import UsageWriter

TABLE = """DROP TABLE IF EXISTS "UsageLog"; DROP SCHEMA IF EXISTS charhub_ops CASCADE;
CREATE TABLE "UsageLog" ("id" TEXT PRIMARY KEY, "userId" TEXT, "timestamp" TIMESTAMP(3) NOT NULL,
    "processed" BOOLEAN NOT NULL DEFAULT false, "tokens" INTEGER NOT NULL DEFAULT 0);
CREATE INDEX "UsageLog_timestamp_idx" ON "UsageLog"("timestamp");"""
NOW = datetime.now(UTC).replace(tzinfo=None)


ALONE = "writer alone, nothing deleted (2 s)"


def restart(cluster: PgCluster, shared_buffers: str, fsync: str) -> None:
    """The harness's cluster runs with fsync off; the bench's with the given settings (command-line options replace
    the harness's, as ``pg_ctl restart -o`` does)."""
    opts = (f"-p {cluster.port} -k {cluster.datadir.parent} -c listen_addresses=127.0.0.1 -c max_connections=100 "
            f"-c fsync={fsync} -c synchronous_commit=on -c shared_buffers={shared_buffers}")
    pg_ctl(cluster, "-o", opts, "-l", str(cluster.datadir.parent / "log"), "-w", "restart")


def describe(conn: psycopg.Connection) -> str:
    sizes = conn.execute("""SELECT pg_size_pretty(pg_relation_size('"UsageLog"')),
        pg_size_pretty(pg_total_relation_size('"UsageLog"')), current_setting('shared_buffers'),
        current_setting('fsync'), current_setting('synchronous_commit')""").fetchone()
    return "heap {}, with indexes {}; shared_buffers {}, fsync {}, synchronous_commit {}".format(*sizes)


def build(conn: psycopg.Connection, rows: int, fresh: int) -> None:
    conn.execute(TABLE)
    conn.execute("""INSERT INTO "UsageLog" (id, "userId", "timestamp", processed)
        SELECT 'old' || g, 'user' || (g %% 1000), %s - make_interval(days => 91) - make_interval(secs => g), true
        FROM generate_series(1, %s) g""", [NOW, rows])
    conn.execute("""INSERT INTO "UsageLog" (id, "userId", "timestamp", processed)
        SELECT 'new' || g, 'user' || (g %% 1000), %s - make_interval(secs => g), g %% 2 = 0
        FROM generate_series(1, %s) g""", [NOW, fresh])
    conn.execute('VACUUM (ANALYZE) "UsageLog"')


def timed(url: str, rows: int, action) -> tuple[float, float, float]:
    """(seconds, the writer's worst wait, its 99th percentile) of ``action()`` under the writer (printed)."""
    rng = random.Random(7)
    writer = UsageWriter(url, lambda i: f"old{rng.randint(1, rows)}", pause=0.005)
    writer.start()
    time.sleep(0.5)
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    writer.stop.set()
    writer.join()
    if writer.errors:
        raise writer.errors[0]
    worst, p99 = max(writer.waits), statistics.quantiles(writer.waits, n=100, method="inclusive")[98]
    print(f"  writer: {len(writer.waits)} insert+update pairs, worst {worst * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms",
          flush=True)
    return seconds, worst, p99


def alone(seconds: float):
    """The writer's own waits with nothing deleted (the machine's and fsync's share of them)."""
    return lambda: time.sleep(seconds)


def batched(conn: psycopg.Connection, batch: int, opts: RowOptions):
    """What ``charhub-ops cleanup`` does after its plan (catalog checks + the exact count, not timed: the dry
    run's figures; printed): the batched delete (VACUUM afterwards not timed either: the single DELETE needs it too)."""
    (plan,) = plan_policies(conn, PolicyFile.model_validate({"policies": [{
        "table": "UsageLog", "timestamp_column": "timestamp", "older_than": "90d", "where": {"processed": True},
        "batch_size": batch}]}))
    cutoff = NOW.replace(tzinfo=UTC) - timedelta(days=90)
    started = time.perf_counter()
    matched = count_matching(conn, plan, cutoff)
    print(f"  plan: {matched:,} rows matched, counted in {time.perf_counter() - started:.2f} s (not timed)")
    return lambda: report(delete_expired(conn, plan, cutoff, opts, matched=matched))


def report(result) -> None:
    print(f"  batched ({result.sweep} sweep): {result.deleted} rows in {result.batches} batches, slowest "
          f"{result.slowest_batch * 1000:.0f} ms, {result.lock_waits} timeouts, {result.skip_locked_batches} reruns "
          f"with SKIP LOCKED, last size {result.batch_size}", flush=True)


def single(conn: psycopg.Connection):
    def delete() -> None:
        cur = conn.execute("""DELETE FROM "UsageLog" WHERE "timestamp" < %s AND processed""",
                           [NOW - timedelta(days=90)])
        print(f"  single DELETE: {cur.rowcount} rows", flush=True)
    return delete


def print_table(results: dict[str, list[tuple[float, float, int]]], rows: int) -> None:
    """Medians (and ranges) per method, then the throughput ratios of the medians."""
    def median(values: list[float]) -> float:
        return statistics.median(values)

    def ms(values: list[float]) -> str:
        return ", ".join(f"{v * 1000:.0f}" for v in values) + " ms"

    print("\n| method | seconds (median, range) | rows/s | writer's worst wait (each round) | writer's p99 |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        seconds = [r[0] for r in runs]
        speed = "—" if name == ALONE else f"{rows / median(seconds):,.0f}"
        print(f"| {name} | {median(seconds):.2f} ({min(seconds):.2f}–{max(seconds):.2f}) | {speed} | "
              f"{ms([r[1] for r in runs])} | {ms([r[2] for r in runs])} |")
    single_s = median([r[0] for r in results["single DELETE"]])
    ratios = ", ".join(f"{name} {single_s / median([r[0] for r in runs]):.2f}×"
                       for name, runs in results.items() if name not in ("single DELETE", ALONE))
    worst = max(r[1] for r in results["batched"]) * 1000
    print(f"\nthroughput vs the single DELETE (medians of {len(results['single DELETE'])} rounds): {ratios} "
          f"(target ≥ 0.5× at the defaults); writer's worst wait behind the defaults {worst:.0f} ms (target ≤ 100 ms); "
          f"{os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--fresh", type=int, default=250_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--pause", type=float, default=RowOptions().pause)
    parser.add_argument("--pause-ratio", type=float, default=RowOptions().pause_ratio)
    parser.add_argument("--max-batch", type=int, default=RowOptions().max_batch)
    parser.add_argument("--target-batch-seconds", type=float, default=RowOptions().target_batch_seconds)
    parser.add_argument("--sync-commit", action="store_true", help="batches wait for their WAL flush")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (the methods alternate; medians reported)")
    parser.add_argument("--shared-buffers", default="32MB")
    parser.add_argument("--fsync", default="on", choices=["on", "off"])
    args = parser.parse_args()
    opts = RowOptions(pause=args.pause, pause_ratio=args.pause_ratio, max_batch=args.max_batch,
                      target_batch_seconds=args.target_batch_seconds, async_commit=not args.sync_commit)
    print(f"load average before: {loadavg()}", flush=True)
    with pg_cluster() as cluster:
        restart(cluster, args.shared_buffers, args.fsync)
        url = cluster.create_database("bench")
        results: dict[str, list[tuple[float, float, int]]] = {}
        with psycopg.connect(url, autocommit=True) as conn:
            index = opts.model_copy(update={"sweep": "index"})
            for round_ in range(1, args.repeat + 1):
                for name, prepare in (("batched", lambda: batched(conn, args.batch, opts)),
                                      ("batched, index sweep", lambda: batched(conn, args.batch, index)),
                                      ("single DELETE", lambda: single(conn)), (ALONE, lambda: alone(2.0))):
                    build(conn, args.rows, args.fresh)
                    print(f"round {round_}, {name}: table ready ({args.rows:,} expired + {args.fresh:,} fresh rows; "
                          f"{describe(conn)})", flush=True)
                    results.setdefault(name, []).append(timed(url, args.rows, prepare()))
        print_table(results, args.rows)
        print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
