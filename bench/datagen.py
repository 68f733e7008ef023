"""Data generation shared by the bench scripts (a module, not a script): a database of mixed CharHub-like content in
a throwaway PostgreSQL cluster, optionally cached between runs.

* :func:`generate`: ~N GB (``pg_database_size``) of chat-like text from a Zipf vocabulary (``messages``), jsonb
  events (``events``) and random bytea thumbnails (``images``), with btree indexes, loaded with
  ``INSERT ... SELECT generate_series`` in parallel sessions, then VACUUM (FREEZE, ANALYZE) and a CHECKPOINT;
  :func:`make_tiny`: a 100-row database (fixed costs).
* :func:`open_cluster`: the bench's cluster — a new one (tests/harness, WAL settings for bulk loading) filled by
  the caller's function, or with ``--keep`` the one saved under ``--cache-dir`` for the same sizes (page cache
  warmed by reading its data dir).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import psycopg
from measure import MIB, PgCluster, free_port, log, pg_ctl, start_pg_cluster

COMMON = """the be to of and a in that have i it for not on with he as you do at this but his by from they we say
her she or an will my one all would there their what so up out if about who get which go me when make can like time no
just him know take people into year your good some could them see other than then now look only come its over think
also back after use two how our work first well way even new want because any these give day most us is was are were
had has been very much more said story character scene chat message image reply love dark night light world city
old young voice eyes hand smile door room house sword magic dragon castle forest ship star sky moon sun river
quietly slowly suddenly gently softly really maybe perhaps always never again still already yes okay thanks please
sorry hello hey wow great nice cool fine sure right left here where why let need feel tell ask seem try leave call
keep turn begin help show hear play run move live believe hold bring happen write sit stand lose pay meet include
continue set learn change lead understand watch follow stop create speak read spend grow open walk win offer remember
consider appear buy wait serve die send expect build stay fall cut reach kill remain suggest raise pass sell require
report decide pull""".split()


def vocabulary() -> list[str]:
    """~3,000 words: common English first (they get picked most), then pronounceable made-up names."""
    rng = random.Random(42)
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    made = set()
    while len(made) < 2800:
        made.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 4))))
    return COMMON + sorted(made)


N_SENTENCES, N_PARAGRAPHS = 300_000, 150_000

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE bench_words (id int PRIMARY KEY, word text NOT NULL);
CREATE TABLE messages (id bigint NOT NULL, conversation_id bigint NOT NULL, user_id int NOT NULL,
  character_id int NOT NULL, role text NOT NULL, model text, created_at timestamptz NOT NULL, tokens int NOT NULL,
  body text NOT NULL) WITH (autovacuum_enabled = off);
CREATE TABLE events (id bigint NOT NULL, user_id int NOT NULL, kind text NOT NULL, created_at timestamptz NOT NULL,
  payload jsonb NOT NULL) WITH (autovacuum_enabled = off);
CREATE TABLE images (id bigint NOT NULL, owner_id int NOT NULL, sha256 text NOT NULL, width int NOT NULL,
  height int NOT NULL, mime text NOT NULL, created_at timestamptz NOT NULL, thumb bytea NOT NULL)
  WITH (autovacuum_enabled = off);
"""

POOLS = f"""
CREATE TABLE bench_sentences AS
WITH picks AS (
  SELECT s, k, 1 + floor(%(nw)s * random() ^ 3)::int AS wid
  FROM generate_series(0, {N_SENTENCES - 1}) s, LATERAL generate_series(1, 5 + (s % 13)) k)
SELECT s AS id, upper(left(t, 1)) || substr(t, 2) || (ARRAY['.', '.', '.', '!', '?', '...'])[1 + s % 6] AS txt
FROM (SELECT s, string_agg(w.word, ' ' ORDER BY k) AS t FROM picks JOIN bench_words w ON w.id = picks.wid
      GROUP BY s) x;
ALTER TABLE bench_sentences ADD PRIMARY KEY (id);
CREATE TABLE bench_paragraphs AS
WITH picks AS (
  SELECT p, k, floor({N_SENTENCES} * random())::int AS sid
  FROM generate_series(0, {N_PARAGRAPHS - 1}) p, LATERAL generate_series(1, 1 + (p % 6)) k)
SELECT p AS id, string_agg(s.txt, ' ' ORDER BY k) AS txt
FROM picks JOIN bench_sentences s ON s.id = picks.sid GROUP BY p;
ALTER TABLE bench_paragraphs ADD PRIMARY KEY (id);
"""

INSERTS = {
    "messages": f"""
INSERT INTO messages
SELECT x.g, x.g / 24, (x.g / 24) %% 50000 + 1, (x.g / 24) %% 3000 + 1,
       CASE WHEN x.g %% 2 = 0 THEN 'user' ELSE 'assistant' END,
       CASE WHEN x.g %% 2 = 1
            THEN (ARRAY['gpt-4o-mini', 'claude-3-haiku', 'gemini-1.5-flash', 'llama-3.1-70b'])[1 + x.r %% 4] END,
       timestamptz '2024-01-01 00:00:00+00' + x.g * interval '7 seconds' + x.r * interval '1 ms',
       length(p1.txt) / 4 + x.r %% 50,
       CASE WHEN x.g %% 2 = 0 AND x.r %% 4 <> 0 THEN s.txt
            WHEN x.g %% 2 = 1 AND x.r %% 3 = 0 THEN p1.txt || E'\\n\\n' || p2.txt
            ELSE p1.txt END
FROM (SELECT g, floor(random() * {N_PARAGRAPHS})::int AS a, floor(random() * {N_PARAGRAPHS})::int AS b,
             floor(random() * {N_SENTENCES})::int AS c, floor(random() * 1000)::int AS r
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g) x
JOIN bench_paragraphs p1 ON p1.id = x.a JOIN bench_paragraphs p2 ON p2.id = x.b JOIN bench_sentences s ON s.id = x.c
""",
    "events": f"""
INSERT INTO events
SELECT x.g, x.r %% 50000 + 1,
  (ARRAY['page_view', 'api_call', 'llm_request', 'image_generated', 'login', 'credit_spent'])[1 + x.r %% 6],
  timestamptz '2024-01-01 00:00:00+00' + x.g * interval '3 seconds',
  jsonb_build_object(
    'request_id', md5(x.g::text),
    'ip', '10.' || (x.r %% 256) || '.' || (x.r2 %% 256) || '.' || (x.g %% 254 + 1),
    'method', (ARRAY['GET', 'GET', 'GET', 'POST', 'PUT', 'DELETE'])[1 + x.r2 %% 6],
    'path', (ARRAY['/api/v1/characters', '/api/v1/chat/messages', '/api/v1/stories', '/api/v1/images/generate',
                   '/api/v1/users/me', '/api/v1/credits'])[1 + x.r2 %% 6] || '/' || (x.r %% 5000),
    'status', (ARRAY[200, 200, 200, 200, 201, 204, 400, 401, 404, 500])[1 + x.r %% 10],
    'duration_ms', x.r2 %% 2500,
    'user_agent', (ARRAY['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36',
                         'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148',
                         'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari',
                         'Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0',
                         'okhttp/4.12.0'])[1 + x.r %% 5],
    'tokens', jsonb_build_object('prompt', x.r * 3, 'completion', x.r2 %% 4000),
    'tags', jsonb_build_array('beta', 'lang:' || (ARRAY['en', 'pt', 'es', 'ja'])[1 + x.r %% 4]),
    'note', s.txt)
FROM (SELECT g, floor(random() * 1000000)::int AS r, floor(random() * 1000000)::int AS r2,
             floor(random() * {N_SENTENCES})::int AS c
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g) x
JOIN bench_sentences s ON s.id = x.c
""",
    "images": """
INSERT INTO images
SELECT g, (g * 7919) %% 50000 + 1, encode(sha256(int8send(g)), 'hex'), 256 + (g %% 4) * 128, 256 + (g %% 3) * 128,
       (ARRAY['image/webp', 'image/png', 'image/jpeg'])[1 + g %% 3],
       timestamptz '2024-01-01 00:00:00+00' + g * interval '90 seconds',
       gen_random_bytes(1024) || gen_random_bytes(1 + (g %% 700)::int)
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
""",
}
# share of the target size taken by each table's heap (indexes add ~15% to the heaps); bytes per row
# on disk (measured), to size the INSERT chunks so that a table overshoots its budget by ≤ ~5%
BUDGET = {"messages": 0.50, "events": 0.24, "images": 0.12}
ROW_BYTES = {"messages": 300, "events": 540, "images": 1640}
MAX_CHUNK_BYTES = 32 * MIB
INDEXES = [
    "ALTER TABLE messages ADD PRIMARY KEY (id)",
    "CREATE INDEX ON messages (conversation_id, created_at)",
    "CREATE INDEX ON messages (user_id)",
    "ALTER TABLE events ADD PRIMARY KEY (id)",
    "CREATE INDEX ON events (user_id, created_at)",
    "ALTER TABLE images ADD PRIMARY KEY (id)",
    "CREATE INDEX ON images (owner_id)",
]


def _connect(url: str) -> psycopg.Connection:
    """A loading session: no WAL flush waits, large sort memory, no parallel index builds."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SET synchronous_commit = off")
    conn.execute("SET work_mem = '128MB'")
    conn.execute("SET maintenance_work_mem = '512MB'")
    conn.execute("SET max_parallel_maintenance_workers = 0")
    return conn


def _make_pools(url: str) -> None:
    """The schema and the text pools (words, sentences, paragraphs) the INSERTs draw from."""
    with _connect(url) as conn:
        conn.execute(SCHEMA)
        words = vocabulary()
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_words VALUES (%s, %s)", list(enumerate(words, 1)))
        conn.execute(POOLS.replace("%(nw)s", str(len(words))))


def _load_rows(url: str, size_bytes: int, jobs: int) -> None:
    """Fill the tables in chunks of INSERTS from ``jobs`` sessions, in turn, until each reaches its BUDGET."""
    lock = threading.Lock()
    next_id = {t: 1 for t in INSERTS}
    full = {t: False for t in INSERTS}
    budget = {t: int(size_bytes * share) for t, share in BUDGET.items()}
    chunk = {t: max(1000, min(MAX_CHUNK_BYTES, budget[t] // 40) // ROW_BYTES[t]) for t in INSERTS}
    turn = [0]

    def next_chunk() -> tuple[str, int] | None:
        with lock:
            open_tables = [t for t in INSERTS if not full[t]]
            if not open_tables:
                return None
            table = open_tables[turn[0] % len(open_tables)]
            turn[0] += 1
            lo = next_id[table]
            next_id[table] += chunk[table]
            return table, lo

    def loader() -> None:
        with _connect(url) as conn:
            while (work := next_chunk()) is not None:
                table, lo = work
                conn.execute(INSERTS[table], {"lo": lo, "hi": lo + chunk[table] - 1})
                size = conn.execute("SELECT pg_table_size(%s)", (table,)).fetchone()[0]
                if size >= budget[table]:
                    with lock:
                        full[table] = True

    with ThreadPoolExecutor(jobs) as pool:
        for f in [pool.submit(loader) for _ in range(jobs)]:
            f.result()


def _in_parallel(url: str, statements: list[str], jobs: int) -> None:
    def one(stmt: str) -> None:
        with _connect(url) as conn:
            conn.execute(stmt)

    with ThreadPoolExecutor(jobs) as pool:
        for f in [pool.submit(one, s) for s in statements]:
            f.result()


def generate(cluster: PgCluster, dbname: str, size_bytes: int, jobs: int) -> float:
    """Create ``dbname`` of ~``size_bytes`` (pg_database_size); returns seconds."""
    started = time.perf_counter()
    url = cluster.create_database(dbname)
    _make_pools(url)
    log(f"  {dbname}: text pools ready ({time.perf_counter() - started:.1f} s)")
    _load_rows(url, size_bytes, jobs)
    log(f"  {dbname}: rows loaded ({time.perf_counter() - started:.1f} s)")
    with _connect(url) as conn:
        conn.execute("DROP TABLE bench_paragraphs, bench_sentences, bench_words")
    _in_parallel(url, INDEXES, jobs)
    _in_parallel(url, [f"VACUUM (FREEZE, ANALYZE) {t}" for t in INSERTS], jobs)
    with _connect(url) as conn:
        for t in INSERTS:
            conn.execute(f"ALTER TABLE {t} RESET (autovacuum_enabled)")
        conn.execute("CHECKPOINT")
    return time.perf_counter() - started


def make_tiny(cluster: PgCluster, dbname: str) -> None:
    url = cluster.create_database(dbname)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, created_at timestamptz NOT NULL)")
        conn.execute("INSERT INTO notes SELECT g, 'note ' || g, now() FROM generate_series(1, 100) g")


def db_size(cluster: PgCluster, dbname: str) -> int:
    with cluster.connect() as conn:
        return int(conn.execute("SELECT pg_database_size(%s)", (dbname,)).fetchone()[0])


# -------------------------------------------------------------------------------- cluster (+ cache)

def start_cached(cache: Path) -> PgCluster:
    """Start the saved cluster in ``cache`` (same options as tests/harness) on a free port."""
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))[-1]
    cluster = PgCluster(datadir=cache / "data", port=free_port(), bin=bindir.parent)
    opts = f"-p {cluster.port} -k {cache} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
    pg_ctl(cluster, "-o", opts, "-l", str(cache / "log"), "-w", "start")
    return cluster


def warm_page_cache(datadir: Path) -> float:
    started = time.perf_counter()
    buf = bytearray(8 * MIB)
    for path in datadir.rglob("*"):
        if path.is_file():
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass
    return time.perf_counter() - started


def _save(cluster: PgCluster, cache: Path, stamp: dict) -> None:
    """Stop ``cluster`` and move it into ``cache`` (bench.json = ``stamp``)."""
    pg_ctl(cluster, "-m", "fast", "stop")
    shutil.rmtree(cache, ignore_errors=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(cluster.datadir.parent), str(cache))
    (cache / "bench.json").write_text(json.dumps(stamp))
    sizes = "sizes" if len(stamp) > 1 else "size"
    print(f"cluster saved in {cache} (reused by --keep with the same {sizes})", flush=True)


def open_cluster(stack: ExitStack, args: argparse.Namespace, stamp: dict, fill: Callable[[PgCluster], None],
                 tidy: Callable[[PgCluster], None] | None = None) -> PgCluster:
    """The benchmark's cluster (``args``: size_gb, jobs, keep, cache_dir), stopped when ``stack`` closes.

    With ``--keep``, the cluster saved in ``<cache-dir>/<size>gb`` is started again if its bench.json is ``stamp``
    (and the page cache warmed by reading its data dir). Otherwise a new one (tests/harness) gets WAL settings
    for bulk loading and ``fill`` generates its data; with ``--keep`` and a complete ``fill``, it is moved into
    the cache (bench.json = ``stamp``) when ``stack`` closes. ``tidy`` runs on a reused cluster (leftovers of an
    interrupted run) and before one is saved."""
    cache = args.cache_dir / f"{args.size_gb:g}gb"
    if args.keep and (cache / "bench.json").exists() and json.loads((cache / "bench.json").read_text()) == stamp:
        cluster = start_cached(cache)
        stack.callback(pg_ctl, cluster, "-m", "fast", "stop")
        if tidy:
            tidy(cluster)
        log(f"reusing the cached cluster {cache} (page cache warmed in {warm_page_cache(cluster.datadir):.1f} s)")
        return cluster
    cluster = start_pg_cluster()
    generated = False

    def finish_cluster() -> None:
        if not (args.keep and generated):
            cluster.stop()
            return
        if tidy:
            tidy(cluster)
        _save(cluster, cache, stamp)

    stack.callback(finish_cluster)
    with cluster.connect() as conn:
        conn.execute("ALTER SYSTEM SET max_wal_size = '16GB'")
        conn.execute("ALTER SYSTEM SET checkpoint_timeout = '30min'")
        conn.execute("SELECT pg_reload_conf()")
    log(f"generating ~{args.size_gb:g} GB with {args.jobs} sessions …")
    fill(cluster)
    generated = True
    return cluster
