"""Prune benchmark: 10,000 backups (30,000 objects) on a local S3 server (moto), planned and deleted.

    .venv/bin/python bench/prune_bench.py [--backups 10000] [--workers 8]

Starts its own moto server (tests/harness), creates one backup per hour with three tiny objects each
(not timed), then times the scan + plan and the deletion with the default policy of the settings
(7 daily, 4 weekly, 6 monthly, min_keep 3). Target: scan + plan + delete ≤ 10 s.
"""

from __future__ import annotations

import argparse
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from measure import s3_server  # first: it puts the repository root on sys.path

from charhub_ops.backup.manifest import MANIFEST, backup_prefix, new_backup_id
from charhub_ops.retention.policy import RetentionPolicy
from charhub_ops.retention.prune import execute_prune, plan_prune, scan_repository
from charhub_ops.storage import S3Options, S3Storage

FILES = ("dump.pgc.zst", "globals.sql.zst", MANIFEST)


def fill(storage: S3Storage, count: int, newest: datetime) -> None:
    """``count`` hourly backups of ``charhub_db`` ending at ``newest``, three empty objects each."""
    prefixes = [backup_prefix("charhub_db", new_backup_id(newest - timedelta(hours=i))) for i in range(count)]
    keys = [prefix + name for prefix in prefixes for name in FILES]

    def put(key: str) -> None:
        storage.client.put_object(Bucket=storage.bucket, Key=storage._key(key), Body=b"")

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backups", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8, help="parallel DeleteObjects batches")
    args = parser.parse_args()

    with s3_server() as server:
        opts = S3Options(endpoint_url=server.endpoint, region="us-east-1", concurrency=16)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        storage = S3Storage(bucket, "backups", opts)
        storage.client.create_bucket(Bucket=bucket)
        now = datetime.now(UTC)
        started = time.perf_counter()
        fill(storage, args.backups, now)
        print(f"created {args.backups} backups ({args.backups * len(FILES)} objects) "
              f"in {time.perf_counter() - started:.1f} s (not timed)")

        policy = RetentionPolicy.build(keep_daily=7, keep_weekly=4, keep_monthly=6, min_keep=3)
        t0 = time.perf_counter()
        inventory = scan_repository(storage)
        t1 = time.perf_counter()
        plan = plan_prune(inventory, policy, now)
        t2 = time.perf_counter()
        result = execute_prune(storage, plan, workers=args.workers)
        t3 = time.perf_counter()

        kept = sum(len(d.keep) for d in plan.databases)
        left = sum(1 for _ in storage.list())
        assert not result.warnings and left == kept * len(FILES), (result.warnings[:3], left, kept)
        print(f"scan (list {len(inventory.backups) * len(FILES)} objects): {t1 - t0:.2f} s")
        print(f"plan ({len(inventory.backups)} backups, keep {kept}): {t2 - t1:.2f} s")
        print(f"delete ({result.deleted_objects} objects, {len(result.removed)} backups): {t3 - t2:.2f} s")
        print(f"total prune: {t3 - t0:.2f} s (target ≤ 10 s)")


if __name__ == "__main__":
    main()
