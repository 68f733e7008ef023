"""Media reference lookup benchmark: the orphan scan's streamed lookup over a CharHub-shaped ``Character`` table.

    .venv/bin/python bench/media_refs_bench.py [--rows 200000] [--repeat 3]

Starts a throwaway PostgreSQL cluster (tests/harness) and fills ``Character`` with ``--rows`` rows, each holding
media the way CharHub does: ``avatar`` (a CDN URL with a query string), ``imageUrls`` (text[], three URLs),
``metadata`` (jsonb, two nested URLs) and ``description`` (markdown with one image and ~600 characters of
prose); media names carry a 20-character id, like CharHub's cuids. Every row references 7 keys (1.4 M
references for 200k rows). Measured (medians of ``--repeat``):

* plan: :func:`charhub_ops.cleanup.media_refs.referenced_keys` for 50,000 listed keys (half of them referenced)
  over the four columns: one streamed pass per column;
* re-check: the same for one batch of ``RECHECK_BATCH`` keys (the same passes: the cost does not depend on the
  number of keys);
* the code before issue 16 (``substring(col::text FROM ...) = ANY(keys)`` per batch of 5,000 keys), for scale;
* the process's peak RSS growth during the lookups (streamed: it must not grow with the table).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import time

import psycopg
from measure import pg_cluster  # first: it puts the repository root on sys.path
from psycopg import sql

from charhub_ops.cleanup.media_refs import parse_references, referenced_keys
from charhub_ops.cleanup.orphans import RECHECK_BATCH
from tests.harness.charhub_schema import CHARHUB_SCHEMA

REFS = parse_references(["Character.avatar", "Character.imageUrls", "Character.metadata", "Character.description"])
PROSE = "She walks through the old market, talking to every merchant about the weather and the harvest. " * 3


def build(conn: psycopg.Connection, rows: int) -> None:
    conn.execute(CHARHUB_SCHEMA)
    conn.execute('ALTER TABLE "Character" ADD COLUMN "imageUrls" text[], ADD COLUMN metadata jsonb, '
                 'ADD COLUMN description text')
    conn.execute("""INSERT INTO "Character" (id, avatar, "imageUrls", metadata, description)
        SELECT 'c' || g, 'https://media.charhub.app/prod/characters/' || id || '/avatar.webp?v=2',
               ARRAY['https://media.charhub.app/prod/gallery/' || id || '-1.png',
                     'https://media.charhub.app/prod/gallery/' || id || '-2.png',
                     'https://media.charhub.app/prod/gallery/' || id || '-3.png'],
               jsonb_build_object('style', 'anime', 'images', jsonb_build_array(
                   jsonb_build_object('url', 'https://media.charhub.app/prod/meta/' || id || '-a.png', 'w', 512),
                   jsonb_build_object('url', 'https://media.charhub.app/prod/meta/' || id || '-b.png', 'w', 512))),
               %(prose)s || ' ![scene](https://media.charhub.app/prod/scenes/' || id || '.png) ' || %(prose)s
        FROM generate_series(1, %(rows)s) g, LATERAL (SELECT left(md5(g::text), 20) AS id) i""",
                 {"rows": rows, "prose": PROSE})
    conn.execute('VACUUM (ANALYZE) "Character"')


def _id(g: int) -> str:
    return hashlib.md5(str(g).encode()).hexdigest()[:20]  # cuid-like, as CharHub's ids


def listed_keys(count: int) -> list[str]:
    """``count`` listed keys: half referenced (avatars of the first rows), half orphans."""
    half = count // 2
    return ([f"prod/characters/{_id(g)}/avatar.webp" for g in range(1, half + 1)]
            + [f"prod/gone/{_id(-g)}.png" for g in range(half)])


def old_lookup(conn: psycopg.Connection, keys: list[str]) -> set[str]:
    found: set[str] = set()
    for ref in REFS:
        statement = sql.SQL("SELECT DISTINCT k FROM (SELECT substring({c}::text FROM %(p)s) AS k FROM {t} "
                            "WHERE {c} IS NOT NULL) r WHERE k = ANY(%(keys)s)").format(
            c=sql.Identifier(ref.column), t=sql.Identifier(ref.table))
        for i in range(0, len(keys), 5000):
            found.update(r[0] for r in conn.execute(statement, {"p": "(?:^|/)((?:prod/)[^?#]*)",
                                                                 "keys": keys[i:i + 5000]}))
    return found


def timed(func, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with pg_cluster() as cluster:
        with cluster.connect() as conn:
            build(conn, args.rows)
            size = conn.execute("SELECT pg_total_relation_size('\"Character\"')").fetchone()[0]
            keys = listed_keys(50_000)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            plan_s, found = timed(lambda: referenced_keys(conn, REFS, keys, ["prod/"]), args.repeat)
            batch = keys[:RECHECK_BATCH // 2] + keys[-(RECHECK_BATCH // 2):]
            recheck_s, again = timed(lambda: referenced_keys(conn, REFS, batch, ["prod/"]), args.repeat)
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
            old_s, old = timed(lambda: old_lookup(conn, keys), 1)
        print(json.dumps({"rows": args.rows, "table_mb": round(size / 1e6, 1), "listed_keys": len(keys),
                          "plan_seconds": round(plan_s, 2), "plan_found": len(found),
                          "recheck_keys": len(batch), "recheck_seconds": round(recheck_s, 3),
                          "recheck_found": len(again), "old_code_seconds": round(old_s, 2),
                          "old_code_found": len(old), "peak_rss_growth_mb": round(grown / 1024, 1)}, indent=1))


if __name__ == "__main__":
    main()
