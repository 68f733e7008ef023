"""Media orphans that must never take live media (issue 16, items 1-4), against the S3 server and real PostgreSQL:
references inside text[], JSON, percent-encoded URLs and markdown; each prefix judged against its own database
(dev/ never against production); the re-check of each batch just before acting; the stop when too much looks
orphaned. The tasks are called as functions (``.fn``) with a ``now`` past the grace period."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import psycopg
import pytest

from charhub_ops.cleanup.orphans import (
    OrphanOptions,
    References,
    execute_orphans,
    parse_owners,
    parse_references,
    plan_orphans,
)
from charhub_ops.errors import ConfigError, PolicyError
from charhub_ops.settings import load_settings
from charhub_ops.storage import open_storage
from tasks.cleanup import _storage_lines, act_storage, plan_storage, resolve_cleanup_config
from tests.harness.charhub_schema import create_charhub_schema

REFS = parse_references(["Character.avatar", "Character.imageUrls", "Character.metadata", "Character.description"])
LATER = timedelta(days=30)  # "now" for the plan: every object is past the grace period


def charhub_db(url: str) -> str:
    """CharHub's schema plus the media columns of its Prisma model: String[] (text[]), Json (jsonb), text."""
    create_charhub_schema(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('ALTER TABLE "Character" ADD COLUMN "imageUrls" text[], ADD COLUMN metadata jsonb, '
                     'ADD COLUMN description text')
    return url


def add_character(url: str, **columns) -> None:
    columns = {"id": uuid.uuid4().hex, **columns}
    names = ", ".join(f'"{name}"' for name in columns)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "Character" ({names}) VALUES ({", ".join(["%s"] * len(columns))})',
                     list(columns.values()))


def put(storage, *keys: str):
    for key in keys:
        storage.put_bytes(key, b"x" * 10)
    return max(storage.stat(key).modified for key in keys) + LATER


def options(mode: str, share: float = 1.0, prefixes: tuple[str, ...] = ("prod/",)) -> OrphanOptions:
    return OrphanOptions(prefixes=list(prefixes), grace=timedelta(days=2), max_objects=100, mode=mode,
                         max_orphan_share=share)


def listed(storage, prefix: str = "") -> set[str]:
    return {o.key for o in storage.list(prefix)}


@pytest.fixture
def prod(database):
    return charhub_db(database)


def test_live_media_in_arrays_json_encoded_urls_and_markdown_are_not_orphans(bucket, prod, pg):
    """Before: a quarantine run moved 4 of these 5 live objects (only the ?v=1 URL was seen)."""
    storage = open_storage(f"s3://{bucket}")
    live = ["prod/gallery/one.png", "prod/meta/two.webp", "prod/covers/three four.png", "prod/md/five.png",
            "prod/md/six.png"]
    now = put(storage, *live, "prod/orphan.png", "dev/dev-only.png")
    add_character(prod, imageUrls=["https://cdn.charhub.app/prod/gallery/one.png?v=1", "x"],
                  metadata=json.dumps({"images": [{"url": "https://cdn/prod/meta/two.webp#top", "w": 3}]}),
                  avatar="https://cdn.charhub.app/prod/covers/three%20four.png",
                  description="![a](https://cdn/prod/md/five.png) and ![b](https://cdn/prod/md/six.png), bye")
    dev = charhub_db(pg.create_database("dev_" + uuid.uuid4().hex[:8]))
    add_character(dev, avatar="https://dev.charhub.app/dev/dev-only.png")
    with psycopg.connect(prod, autocommit=True) as p, psycopg.connect(dev, autocommit=True) as d:
        refs = References({"prod/": p, "dev/": d}, REFS)
        opts = options("quarantine", prefixes=("prod/", "dev/"))
        plan = plan_orphans(storage, refs, opts, now)
        assert [o.key for o in plan.candidates] == ["prod/orphan.png"] and plan.referenced == 6
        result = execute_orphans(storage, plan, opts, now, refs)
    assert result.quarantined == ["prod/orphan.png"]
    assert listed(storage, "prod/") | listed(storage, "dev/") == {*live, "dev/dev-only.png"}


@pytest.mark.parametrize("mode", ["quarantine", "delete"])
def test_a_reference_that_appears_between_plan_and_act_keeps_the_object(bucket, prod, mode):
    storage = open_storage(f"s3://{bucket}")
    now = put(storage, "prod/a.png", "prod/b.png", "prod/c.png")
    with psycopg.connect(prod, autocommit=True) as conn:
        refs = References({"prod/": conn}, REFS)
        plan = plan_orphans(storage, refs, options(mode), now)
        assert [o.key for o in plan.candidates] == ["prod/a.png", "prod/b.png", "prod/c.png"]
        # the app starts using prod/a.png (a text[] element) and prod/b.png (in JSON) after the plan
        add_character(prod, imageUrls=["prod/a.png"], metadata=json.dumps({"x": ["https://c/prod/b.png?w=1"]}))
        result = execute_orphans(storage, plan, options(mode), now, refs)
    assert sorted(result.skipped_referenced) == ["prod/a.png", "prod/b.png"]
    assert listed(storage, "prod/") == {"prod/a.png", "prod/b.png"}
    assert (result.quarantined if mode == "quarantine" else result.deleted) == ["prod/c.png"]
    quarantined = {f"quarantine/{now.date().isoformat()}/prod/c.png"} if mode == "quarantine" else set()
    assert listed(storage, "quarantine/") == quarantined  # the copies of a.png and b.png were dropped


def test_too_many_orphans_stop_the_run_before_anything_moves(bucket, prod):
    storage = open_storage(f"s3://{bucket}")
    now = put(storage, "prod/live.png", *(f"prod/old-{i}.png" for i in range(4)))
    add_character(prod, avatar="prod/live.png")
    before = listed(storage)
    with psycopg.connect(prod, autocommit=True) as conn:
        refs = References({"prod/": conn}, REFS)
        with pytest.raises(PolicyError) as failure:
            plan_orphans(storage, refs, options("delete", share=0.2), now)
        assert str(failure.value).count("\n") == 0
        assert "4 of 5 objects under prod/ (80%) look orphaned" in str(failure.value)
        assert "reference list" in str(failure.value) and "probably wrong" in str(failure.value)
        assert listed(storage) == before
        assert len(plan_orphans(storage, refs, options("delete", share=0.8), now).candidates) == 4  # at the limit


# --- each prefix's database: the settings and the tasks --------------------------------------------------------

@pytest.fixture
def media_env(monkeypatch, bucket, prod, tmp_path):
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", prod)
    monkeypatch.setenv("CHARHUB_OPS_REPOSITORY", f"file://{tmp_path}/repo")
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_REPOSITORY", f"s3://{bucket}")
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_REFERENCES", "Character.avatar,Character.imageUrls")
    monkeypatch.delenv("CHARHUB_OPS_CLEANUP_MEDIA_PREFIXES", raising=False)
    monkeypatch.delenv("CHARHUB_OPS_CLEANUP_MEDIA_DATABASES", raising=False)
    storage = open_storage(f"s3://{bucket}")
    now = put(storage, "prod/live.png", "prod/p1.png", "prod/p2.png", "prod/p3.png", "prod/p4.png", "prod/p5.png",
              "dev/x.png", "dev/y.png")
    add_character(prod, avatar="prod/live.png", imageUrls=["dev/x.png"])
    return storage, now


def plan(now, mode="quarantine"):
    cfg = resolve_cleanup_config.fn(load_settings(), ["storage"], mode, None)
    return cfg, plan_storage.fn(cfg.backups, cfg.media, now)["media"]


def test_by_default_only_prod_is_scanned_against_the_configured_database(media_env, monkeypatch):
    """Before: with the default prefixes prod/,dev/ and one DATABASE_URL, dev/y.png was an orphan of production."""
    storage, now = media_env
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_MAX_ORPHAN_SHARE", "1")
    cfg, media = plan(now)
    assert list(cfg.media.databases) == ["prod/"] and media["not_scanned"] == []
    assert all(o["key"].startswith("prod/p") for o in media["candidates"]) and len(media["candidates"]) == 5
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_PREFIXES", "prod/,dev/")  # dev/ listed, but no database owns it
    cfg, media = plan(now)
    assert media["not_scanned"] == ["dev/"] and not [o for o in media["candidates"] if o["key"].startswith("dev/")]
    done = act_storage.fn(cfg.backups, cfg.media, {"uploads": [], "media": media}, now)
    assert len(done["media"]["quarantined"]) == 5 and {"dev/x.png", "dev/y.png"} <= listed(storage, "dev/")


def test_dev_is_judged_against_its_own_database(media_env, monkeypatch, pg):
    storage, now = media_env
    dev = charhub_db(pg.create_database("dev_" + uuid.uuid4().hex[:8]))
    add_character(dev, avatar="https://dev.charhub.app/dev/y.png")  # production references dev/x.png, not dev/
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_PREFIXES", "prod/,dev/")
    secret = "pw-MARK-91c"  # trust auth ignores it: a marker that must show nowhere
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_DATABASES",
                       f"prod/=DATABASE_URL, dev/={dev.replace('postgres@', f'postgres:{secret}@')}")
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_MAX_ORPHAN_SHARE", "1")
    cfg, media = plan(now, mode="delete")
    assert media["not_scanned"] == [] and set(media["databases"]) == {"prod/", "dev/"}
    assert {o["key"] for o in media["candidates"] if o["key"].startswith("dev/")} == {"dev/x.png"}
    done = act_storage.fn(cfg.backups, cfg.media, {"uploads": [], "media": media}, now)
    assert "dev/x.png" in done["media"]["deleted"] and "dev/y.png" in listed(storage, "dev/")
    report = _storage_lines({"uploads": [], "media": media}, done)
    assert "- dev/ judged against the references in postgresql://postgres:***@" in "\n".join(report)
    assert secret not in json.dumps(media) + json.dumps(done) + "\n".join(report)


def test_the_sanity_stop_fails_the_storage_plan(media_env):
    _, now = media_env  # 5 of 6 prod/ objects unreferenced, the default share is 20 %
    with pytest.raises(PolicyError, match=r"5 of 6 objects under prod/ .* probably wrong"):
        plan(now)


@pytest.mark.parametrize(("text", "prefixes", "expected"), [
    (None, ["prod/"], {"prod/": "DATABASE_URL"}),
    (None, ["prod/", "dev/"], {"prod/": "DATABASE_URL"}),
    (None, ["dev/"], {}),
    ("prod/=DATABASE_URL,dev/=charhub-ops-dev-url", ["prod/", "dev/"],
     {"prod/": "DATABASE_URL", "dev/": "charhub-ops-dev-url"}),
    ("dev/=postgresql://u:pw@h1,h2/db?sslmode=require,prod/=DATABASE_URL", ["prod/", "dev/"],
     {"dev/": "postgresql://u:pw@h1,h2/db?sslmode=require", "prod/": "DATABASE_URL"}),  # a multi-host URL
])
def test_owners(text, prefixes, expected):
    assert parse_owners(text, prefixes) == expected


@pytest.mark.parametrize(("text", "needle"), [
    ("dev/=postgresql://u:s3cret@h/db", "dev/ is not in cleanup_media_prefixes"),
    ("prod/", "each entry is prefix/=owner"),
    ("prod=postgresql://u:s3cret@h/db", "each entry is prefix/=owner"),
])
def test_bad_owners_name_the_setting_never_the_url(text, needle):
    with pytest.raises(ConfigError, match=needle) as failure:
        parse_owners(text, ["prod/"])
    assert "s3cret" not in str(failure.value)


def test_an_owner_may_be_a_secret_block(prefect_server, media_env, monkeypatch, pg):
    from prefect.blocks.system import Secret

    _, now = media_env
    dev = charhub_db(pg.create_database("dev_" + uuid.uuid4().hex[:8]))
    add_character(dev, avatar="dev/y.png")
    Secret(value=dev).save("charhub-ops-test-dev-url", overwrite=True)
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_PREFIXES", "dev/")
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_DATABASES", "dev/=charhub-ops-test-dev-url")
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_MAX_ORPHAN_SHARE", "1")
    _, media = plan(now)
    assert [o["key"] for o in media["candidates"]] == ["dev/x.png"]  # dev/y.png is referenced in its own database
    monkeypatch.setenv("CHARHUB_OPS_CLEANUP_MEDIA_DATABASES", "dev/=no-such-block")
    with pytest.raises(ConfigError, match=r"cleanup_media_databases \(dev/\): no Prefect Secret block named"):
        plan(now)
