"""Object storage cleanup against the S3 server: media orphans (referenced, unreferenced, young, quarantined)
and stale multipart uploads in the backup repository (prune's code)."""

from __future__ import annotations

import time
from datetime import timedelta

import boto3
import psycopg
import pytest

from charhub_ops.cleanup.orphans import (
    OrphanOptions,
    References,
    abort_stale_uploads,
    execute_orphans,
    parse_references,
    plan_orphans,
    stale_uploads,
)
from charhub_ops.errors import ConfigError
from charhub_ops.storage import open_storage
from tests.harness.charhub_schema import create_charhub_schema

REFS = parse_references(["Character.avatar", "Character.coverUrl", "CuratedImage.url"])


@pytest.fixture
def media(bucket, database):
    """prod/ and dev/ objects: referenced by key, by URL (with a query), unreferenced; then young ones."""
    create_charhub_schema(database)
    storage = open_storage(f"s3://{bucket}")
    old = {"prod/characters/a.png": b"a" * 10, "prod/characters/b.png": b"b" * 20, "dev/covers/c.webp": b"c" * 30,
           "prod/orphan-1.png": b"x" * 40, "dev/orphan-2.png": b"y" * 50, "prod/curated/d.png": b"d" * 5,
           "other/not-media.png": b"z"}
    for key, data in old.items():
        storage.put_bytes(key, data)
    storage.put_bytes("quarantine/2026-01-01/prod/long-ago.png", b"q" * 7)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("""INSERT INTO "Character" (id, avatar, "coverUrl") VALUES
            ('c1', 'prod/characters/a.png', NULL),
            ('c2', 'https://media.charhub.app/prod/characters/b.png?v=3', 'https://r2.example/charhub-media/dev/covers/c.webp'),
            ('c3', 'prod/young-referenced.png', NULL)""")
        conn.execute("""INSERT INTO "CuratedImage" (id, url) VALUES ('i1', 'prod/curated/d.png')""")
    time.sleep(1.1)  # S3 times have one-second resolution: the next objects are strictly younger
    storage.put_bytes("prod/young-orphan.png", b"n" * 60)
    storage.put_bytes("prod/young-referenced.png", b"r" * 70)
    now = storage.stat("prod/young-orphan.png").modified
    with psycopg.connect(database, autocommit=True) as conn:
        yield storage, References({"prod/": conn, "dev/": conn}, REFS), now


def opts(mode: str, cap: int = 100, share: float = 1.0) -> OrphanOptions:
    return OrphanOptions(prefixes=["prod/", "dev/"], grace=timedelta(seconds=0.5), max_objects=cap, mode=mode,
                         quarantine_days=30, max_orphan_share=share)


def keys(storage, prefix: str = "") -> set[str]:
    return {o.key for o in storage.list(prefix)}


def test_orphans_are_found_and_a_dry_run_moves_nothing(media):
    storage, refs, now = media
    before = keys(storage)
    plan = plan_orphans(storage, refs, opts("dry-run"), now)
    assert {o.key for o in plan.candidates} == {"prod/orphan-1.png", "dev/orphan-2.png"}
    assert (plan.scanned, plan.young, plan.referenced, plan.over_cap) == (8, 2, 4, 0)
    assert plan.candidate_bytes == 90
    result = execute_orphans(storage, plan, opts("dry-run"), now, refs)
    assert result.quarantined == [] and result.deleted == [] and keys(storage) == before


def test_quarantine_moves_orphans_and_expires_old_quarantine(media):
    storage, refs, now = media
    plan = plan_orphans(storage, refs, opts("quarantine", cap=1), now)
    assert len(plan.candidates) == 1 and plan.over_cap == 1  # the cap per run
    assert [o.key for o in plan.expired_quarantine] == ["quarantine/2026-01-01/prod/long-ago.png"]
    result = execute_orphans(storage, plan, opts("quarantine", cap=1), now, refs)
    (moved,) = result.quarantined
    assert storage.get_bytes(f"quarantine/{now.date().isoformat()}/{moved}") in (b"x" * 40, b"y" * 50)
    assert moved not in keys(storage, "prod/") | keys(storage, "dev/")
    assert result.deleted == ["quarantine/2026-01-01/prod/long-ago.png"] and result.bytes_freed == 7
    again = plan_orphans(storage, refs, opts("quarantine"), now)  # quarantined objects are not scanned again
    assert len(again.candidates) == 1 and again.candidates[0].key != moved


def test_delete_mode_deletes_only_orphans(media):
    storage, refs, now = media
    plan = plan_orphans(storage, refs, opts("delete"), now)
    result = execute_orphans(storage, plan, opts("delete"), now, refs)
    assert sorted(result.deleted) == ["dev/orphan-2.png", "prod/orphan-1.png"] and result.bytes_freed == 90
    assert keys(storage) >= {"prod/characters/a.png", "prod/characters/b.png", "dev/covers/c.webp",
                             "prod/curated/d.png", "prod/young-orphan.png", "other/not-media.png"}


def test_references_must_be_configured():
    with pytest.raises(ConfigError, match="every media object would look orphaned"):
        parse_references([])
    with pytest.raises(ConfigError, match="not Table.column"):
        parse_references(["Character"])


def test_stale_uploads_are_aborted_with_prunes_code(bucket):
    storage = open_storage(f"s3://{bucket}")
    client = boto3.client("s3")
    client.create_multipart_upload(Bucket=bucket, Key="charhub_db/20260101T000000Z-ab12/dump.pgc.zst")
    client.create_multipart_upload(Bucket=bucket, Key="media/big.png")  # outside the backup layout: left alone
    (now,) = {u["Initiated"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]}  # moto's fixed time
    assert stale_uploads(storage, now) == []  # younger than a day
    uploads = stale_uploads(storage, now + timedelta(days=2))
    assert [u.key for u in uploads] == ["charhub_db/20260101T000000Z-ab12/dump.pgc.zst"]
    assert abort_stale_uploads(storage, uploads).aborted_uploads == 1
    left = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert left == ["media/big.png"]
