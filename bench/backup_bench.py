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
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import psycopg  # noqa: E402
from botocore.config import Config  # noqa: E402

from tests.harness.services import (  # noqa: E402
    PgCluster,
    S3Server,
    _as_postgres,
    free_port,
    start_pg_cluster,
    start_s3_server,
)

GB = 1_000_000_000
MIB = 1024 * 1024
VENV_BIN = Path(sys.executable).parent
CLI = str(VENV_BIN / "charhub-ops")
BUCKET = "bench"
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}
os.environ.update(CREDS)

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


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + vals[4]
    total = sum(vals[:8])
    return total - idle, total


# ---------------------------------------------------------------------------------------------- data

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


def generate(cluster: PgCluster, dbname: str, size_bytes: int, jobs: int) -> float:
    """Create ``dbname`` of ~``size_bytes`` (pg_database_size); returns seconds."""
    started = time.perf_counter()
    url = cluster.create_database(dbname)

    def connect() -> psycopg.Connection:
        conn = psycopg.connect(url, autocommit=True)
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET work_mem = '128MB'")
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET max_parallel_maintenance_workers = 0")
        return conn

    with connect() as conn:
        conn.execute(SCHEMA)
        words = vocabulary()
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_words VALUES (%s, %s)", list(enumerate(words, 1)))
        conn.execute(POOLS.replace("%(nw)s", str(len(words))))
    log(f"  {dbname}: text pools ready ({time.perf_counter() - started:.1f} s)")

    lock = threading.Lock()
    next_id = {t: 1 for t in INSERTS}
    full = {t: False for t in INSERTS}
    budget = {t: int(size_bytes * share) for t, share in BUDGET.items()}
    chunk = {t: max(1000, min(MAX_CHUNK_BYTES, budget[t] // 40) // ROW_BYTES[t]) for t in INSERTS}
    turn = [0]

    def loader() -> None:
        with connect() as conn:
            while True:
                with lock:
                    open_tables = [t for t in INSERTS if not full[t]]
                    if not open_tables:
                        return
                    table = open_tables[turn[0] % len(open_tables)]
                    turn[0] += 1
                    lo = next_id[table]
                    next_id[table] += chunk[table]
                conn.execute(INSERTS[table], {"lo": lo, "hi": lo + chunk[table] - 1})
                size = conn.execute("SELECT pg_table_size(%s)", (table,)).fetchone()[0]
                if size >= budget[table]:
                    with lock:
                        full[table] = True

    with ThreadPoolExecutor(jobs) as pool:
        for f in [pool.submit(loader) for _ in range(jobs)]:
            f.result()
    log(f"  {dbname}: rows loaded ({time.perf_counter() - started:.1f} s)")

    def run_each(statements: list[str]) -> None:
        def one(stmt: str) -> None:
            with connect() as conn:
                conn.execute(stmt)

        with ThreadPoolExecutor(jobs) as pool:
            for f in [pool.submit(one, s) for s in statements]:
                f.result()

    with connect() as conn:
        conn.execute("DROP TABLE bench_paragraphs, bench_sentences, bench_words")
    run_each(INDEXES)
    run_each([f"VACUUM (FREEZE, ANALYZE) {t}" for t in INSERTS])
    with connect() as conn:
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

def pg_ctl(cluster: PgCluster, *args: str) -> None:
    subprocess.run(_as_postgres([str(cluster.bin / "pg_ctl"), "-D", str(cluster.datadir), *args]),
                   check=True, capture_output=True)


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
        pg_ctl(cluster, "-m", "fast", "stop")
        shutil.rmtree(cache, ignore_errors=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(cluster.datadir.parent), str(cache))
        (cache / "bench.json").write_text(json.dumps(stamp))
        sizes = "sizes" if len(stamp) > 1 else "size"
        print(f"cluster saved in {cache} (reused by --keep with the same {sizes})", flush=True)

    stack.callback(finish_cluster)
    with cluster.connect() as conn:
        conn.execute("ALTER SYSTEM SET max_wal_size = '16GB'")
        conn.execute("ALTER SYSTEM SET checkpoint_timeout = '30min'")
        conn.execute("SELECT pg_reload_conf()")
    log(f"generating ~{args.size_gb:g} GB with {args.jobs} sessions …")
    fill(cluster)
    generated = True
    return cluster


# ------------------------------------------------------------------------------------ measurement

def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            try:
                found += [int(c) for c in Path(task.path, "children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` plus those of its reaped children (cutime + cstime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(v) for v in fields[11:15]) / HZ
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and every live descendant (exited ones are in their parents)."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        total += _cpu_seconds(p)
        stack += _children(p)
    return total


HZ = os.sysconf("SC_CLK_TCK")
RUNNING: list[subprocess.Popen] = []


@dataclass
class Run:
    seconds: float
    peak_kib: dict[str, int]            # stage / child name -> VmHWM peak
    maxrss_kib: dict[str, int]          # stage name -> wait4 ru_maxrss (includes its reaped children)
    cpu: float                          # user + sys of all stages and their children
    machine_busy: float                 # busy CPU-seconds of the whole machine during the run
    services_cpu: dict[str, float] = field(default_factory=dict)  # watched service -> CPU seconds during the run
    stdout: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def other_cpu(self) -> float:
        """CPU seconds of everything else on the machine (other users' work) during the run."""
        return self.machine_busy - self.cpu - sum(self.services_cpu.values())


def run_measured(stages: list[tuple[str, list[str]]], env: dict[str, str], *, cwd: Path | None = None,
                 watch: dict[str, int] | None = None, timeout: float = 7200) -> Run:
    """Run ``stages`` as a pipe (stdout → stdin); wall time, peak RSS of every stage and of their
    direct children (by name), CPU time of the stages and of the ``watch``ed service process trees.
    Raises RuntimeError with the stderr tail of a failed stage."""
    watch = watch or {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-run-"))
    procs: list[tuple[str, subprocess.Popen]] = []
    peaks: dict[str, int] = {}
    maxrss: dict[str, int] = {}
    codes: dict[str, int] = {}
    cpu = 0.0
    services0 = {name: tree_cpu(pid) for name, pid in watch.items()}
    busy0, _ = cpu_jiffies()
    started = time.perf_counter()
    try:
        prev = None
        for i, (name, argv) in enumerate(stages):
            last = i == len(stages) - 1
            out = open(tmp / "stdout", "wb") if last else subprocess.PIPE
            with open(tmp / f"{name}.err", "wb") as errf:
                proc = subprocess.Popen(argv, stdin=prev.stdout if prev else subprocess.DEVNULL, stdout=out,
                                        stderr=errf, env=env, cwd=cwd)
            if last:
                out.close()
            if prev is not None:
                prev.stdout.close()  # the next stage owns the pipe now
            RUNNING.append(proc)
            procs.append((name, proc))
            prev = proc
        alive = {proc.pid: (name, proc) for name, proc in procs}
        while alive:
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"timeout after {timeout:.0f} s")
            for pid in list(alive):
                name, proc = alive[pid]
                peaks[name] = max(peaks.get(name, 0), _vm_hwm_kib(pid))
                for child in _children(pid):
                    key = f"{name}>{_comm(child)}"
                    peaks[key] = max(peaks.get(key, 0), _vm_hwm_kib(child))
                done, status, usage = os.wait4(pid, os.WNOHANG)
                if done:
                    proc.returncode = codes[name] = os.waitstatus_to_exitcode(status)
                    maxrss[name] = usage.ru_maxrss
                    cpu += usage.ru_utime + usage.ru_stime
                    del alive[pid]
                    RUNNING.remove(proc)
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        busy1, _ = cpu_jiffies()
        services = {name: tree_cpu(pid) - services0[name] for name, pid in watch.items()}
        failed = [n for n, c in codes.items() if c != 0]
        if failed:
            tails = {n: (tmp / f"{n}.err").read_text(errors="replace")[-1500:] for n in failed}
            raise RuntimeError(f"stage(s) failed: {codes}\n" + "\n".join(f"--- {n}:\n{t}" for n, t in tails.items()))
        return Run(seconds=seconds, peak_kib=peaks, maxrss_kib=maxrss, cpu=cpu, machine_busy=(busy1 - busy0) / HZ,
                   services_cpu=services, stdout=(tmp / "stdout").read_text(errors="replace"))
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc in RUNNING:
                RUNNING.remove(proc)
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------ services

def start_prefect_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_API_LOG_RETRYABLE_ERRORS": "true"}  # logs each 503 ("database is locked") it answers
    logf = open(home / "server.log", "wb")
    proc = subprocess.Popen([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    logf.close()
    return proc, f"http://127.0.0.1:{port}/api"


def wait_prefect(proc: subprocess.Popen, api: str, home: Path, timeout: float = 120) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError("prefect server exited:\n" + (home / "server.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(api + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError("prefect server not healthy in time:\n" + (home / "server.log").read_text()[-2000:])


def start_services(stack: ExitStack, tmp: Path) -> tuple[subprocess.Popen, str, Path, S3Server, Any]:
    """A Prefect server (home in ``tmp``; it needs ~15 s: wait_prefect later) and an S3 server with the bucket,
    stopped when ``stack`` closes: (server process, its API URL, its home, the S3 server, an S3 client)."""
    server_home = tmp / "prefect-server"
    server_home.mkdir()
    server, api = start_prefect_server(server_home)
    stack.callback(stop_group, server)
    s3 = start_s3_server()
    stack.callback(s3.stop)
    s3client = boto3.client("s3", endpoint_url=s3.endpoint, config=Config(
        request_checksum_calculation="when_required", response_checksum_validation="when_required"))
    s3client.create_bucket(Bucket=BUCKET)
    return server, api, server_home, s3, s3client


def bench_envs(tmp: Path, s3: S3Server, api: str, cluster: PgCluster, no_bytecode_cache: bool,
               **cli_extra: str) -> tuple[dict[str, str], dict[str, str]]:
    """(cli_env, pg_env) of the measured processes: this environment without R2_/CHARHUB_OPS_/PREFECT_ settings,
    with the S3 server, a private bytecode cache (unless ``no_bytecode_cache``), for the CLI the Prefect server
    (client home in ``tmp``) and ``cli_extra``, for the PostgreSQL tools the cluster."""
    client_home = tmp / "prefect-client"
    client_home.mkdir()
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("R2_", "CHARHUB_OPS_", "PREFECT_")) and k != "DATABASE_URL"}
    base_env.update(CREDS)
    base_env["AWS_ENDPOINT_URL_S3"] = s3.endpoint
    if not no_bytecode_cache:  # like an installed package: modules compiled once, not at every start
        base_env.pop("PYTHONDONTWRITEBYTECODE", None)
        base_env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    cli_env = {**base_env, "PREFECT_API_URL": api, "PREFECT_HOME": str(client_home),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **cli_extra}
    pg_env = {**base_env, "PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "postgres"}
    return cli_env, pg_env


def service_pids(cluster: PgCluster, s3: S3Server, server: subprocess.Popen) -> dict[str, int]:
    """The service process trees whose CPU run_measured counts apart."""
    postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    return {"postgres": postmaster, "s3 server": s3.process.pid, "prefect server": server.pid}


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process we started in its own session, and its children (by its process group id)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
        except ProcessLookupError:
            pass


# ------------------------------------------------------------------------------------ benchmark

def api_post(api: str, path: str, body: dict) -> list[dict]:
    req = urllib.request.Request(api + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def last_flow_run(api: str) -> tuple[float, list[tuple[str, float]]]:
    """(total run time, [(task, seconds)]) of the newest flow run on the server."""
    run = api_post(api, "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})[0]
    tasks = api_post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200})
    tasks.sort(key=lambda t: t["start_time"] or "")
    return float(run["total_run_time"]), [(t["name"].rsplit("-", 1)[0], float(t["total_run_time"])) for t in tasks]


def flow_run_stats(api: str, server_home: Path) -> Callable[[], dict]:
    """A function that returns {"in_flow", "tasks"} of the newest flow run (last_flow_run) and "503s", the
    requests the Prefect server answered 503 since the previous call."""
    seen = 0

    def stats() -> dict:
        nonlocal seen
        in_flow, tasks = last_flow_run(api)
        locked = (server_home / "server.log").read_text(errors="replace").count("Encountered retryable exception")
        out = {"in_flow": in_flow, "tasks": tasks, "503s": locked - seen}
        seen = locked
        return out

    return stats


def interrupt_on_sigterm() -> None:
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


def run_main(main: Callable[[], int]) -> None:
    """sys.exit(main()); Ctrl-C or SIGTERM (interrupt_on_sigterm): a note and exit status 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        sys.exit(130)


def git_state() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass
class Row:
    method: str
    level: str
    runs: list[Run]
    stored: int
    note: str = ""

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda r: r.seconds)


def fmt_mb(kib: int) -> str:
    return f"{kib / 1024:.0f}" if kib else "-"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def flow_cells(run: Run) -> tuple[str, str]:
    """The report's "in flow s" and "503s" cells of ``run`` ("-" for a run without a flow)."""
    in_flow = f"{run.extra['in_flow']:.2f}" if "in_flow" in run.extra else "-"
    locked = str(run.extra["503s"]) if "503s" in run.extra else "-"
    return in_flow, locked


RAW1, RAW3, FLOW1, FLOW3, NAIVE = ("raw   pg_dump|zstd -1", "raw   pg_dump|zstd -3", "flow  CLI, zstd 1",
                                   "flow  CLI, zstd 3 (dflt)", "naive pg_dump -Fc (gzip)")
SMALL, TINY = "flow  small DB, zstd 3", "flow  tiny DB, zstd 3"


def main() -> int:
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
    args = parser.parse_args()

    interrupt_on_sigterm()
    load_before, commit_before = loadavg(), git_state()
    print(f"backup benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB RAM, commit {commit_before}, "
          f"load average before: {load_before}", flush=True)
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="charhub-ops-bench-"))
        stack.callback(shutil.rmtree, tmp, True)

        # 1. Prefect server first (it needs ~15 s: it starts while the data is generated), 2. S3 server
        server, api, server_home, s3, s3client = start_services(stack, tmp)

        # 3. database(s)
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

        log(f"waiting for the Prefect server … healthy after {wait_prefect(server, api, server_home):.1f} s more")

        cli_env, pg_env = bench_envs(tmp, s3, api, cluster, args.no_bytecode_cache)
        uploader = tmp / "uploader.py"
        uploader.write_text(UPLOADER)
        pg_dump = str(cluster.bin / "pg_dump")
        watch = service_pids(cluster, s3, server)
        if not args.no_bytecode_cache:
            warm = run_measured([("py", [sys.executable, "-c", "import flows.backup, boto3"])], cli_env, cwd=ROOT)
            log(f"bytecode cache filled ({warm.seconds:.1f} s, not timed below)")

        def stored_and_clean(prefix: str) -> int:
            """Size of the dump object under ``prefix`` (then every object there is deleted)."""
            objs = [o for page in s3client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
                    for o in page.get("Contents", [])]
            dump = [o["Size"] for o in objs if "dump" in o["Key"].rsplit("/", 1)[-1]]
            for i in range(0, len(objs), 1000):
                batch = [{"Key": o["Key"]} for o in objs[i:i + 1000]]
                s3client.delete_objects(Bucket=BUCKET, Delete={"Objects": batch})
            if len(dump) != 1:
                raise RuntimeError(f"expected one dump object under {prefix}, found {[o['Key'] for o in objs]}")
            return dump[0]

        counter = [0]
        run_stats = flow_run_stats(api, server_home)

        def flow(db: str, level: int) -> tuple[Run, int]:
            counter[0] += 1
            prefix = f"flow{level}-{db}-{counter[0]}"
            run = run_measured([("cli", [CLI, "backup", "--database-url", cluster.url(db), "--to",
                                         f"s3://{BUCKET}/{prefix}", "--json"])],
                               {**cli_env, "CHARHUB_OPS_ZSTD_LEVEL": str(level)}, cwd=ROOT, watch=watch)
            result = json.loads(run.stdout)
            run.extra = {"raw_bytes": result.get("raw_size_bytes"), **run_stats()}
            return run, stored_and_clean(prefix)

        def pipe(name: str, level: int | None) -> tuple[Run, int]:
            counter[0] += 1
            key = f"{name}-{counter[0]}/dump.pgc" + (".zst" if level else "")
            up = ("upload", [sys.executable, str(uploader), BUCKET, key])
            if level is None:
                stages = [("pg_dump", [pg_dump, "-Fc", "bench"]), up]
            else:
                stages = [("pg_dump", [pg_dump, "-Fc", "-Z0", "bench"]),
                          ("zstd", ["zstd", f"-{level}", "-T0", "-q", "-c"]), up]
            run = run_measured(stages, pg_env, watch=watch)
            return run, stored_and_clean(key.rsplit("/", 1)[0] + "/")

        rows: dict[str, Row] = {}

        def record(label: str, level: str, fn: Callable[[], tuple[Run, int]]) -> Run:
            run, stored = fn()
            row = rows.setdefault(label, Row(label, level, [], stored))
            row.runs.append(run)
            row.stored = stored
            peak = max((v for k, v in run.peak_kib.items() if k in ("cli", "upload")), default=0)
            log(f"  {label:<26} {run.seconds:8.2f} s  {stored:>14,} B  py peak {peak / 1024:4.0f} MB  "
                f"cpu {run.cpu:5.1f} s  other users {run.other_cpu:5.1f} cpu-s  load {loadavg()}")
            return run

        # fixed cost first (its first run also pays the first-flow-run registration on the server)
        log("tiny database via the CLI (3 runs) …")
        for _ in range(3):
            record(TINY, "3", lambda: flow("bench_tiny", 3))
        log(f"big database: {args.repeat} round(s) of raw@1, flow@1, raw@3, flow@3, naive …")
        for _ in range(args.repeat):
            record(RAW1, "1", lambda: pipe("raw1", 1))
            record(FLOW1, "1", lambda: flow("bench", 1))
            record(RAW3, "3", lambda: pipe("raw3", 3))
            record(FLOW3, "3", lambda: flow("bench", 3))
            record(NAIVE, "gz6", lambda: pipe("naive", None))
        if small:
            log("small database via the CLI (RSS flatness) …")
            record(SMALL, "3", lambda: flow("bench_small", 3))

        log("startup cost (best of 3) …")
        startup: dict[str, float] = {}
        nopyc_env = {**cli_env, "PYTHONDONTWRITEBYTECODE": "1"}
        nopyc_env.pop("PYTHONPYCACHEPREFIX", None)
        for label, argv, env in [("python -c pass", [sys.executable, "-c", "pass"], cli_env),
                                 ("import flows.backup", [sys.executable, "-c", "import flows.backup"], cli_env),
                                 ("same, no bytecode cache", [sys.executable, "-c", "import flows.backup"], nopyc_env)]:
            startup[label] = min(run_measured([("py", argv)], env, cwd=ROOT).seconds for _ in range(3))

        # ------------------------------------------------------------------------------------ report
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
        print(head)
        print("-" * len(head))
        for row in rows.values():
            b = row.best
            big = row.method not in (SMALL, TINY)
            t_raw = f"{b.seconds / raw[row.level]:.2f}" if big and row.level in raw else "-"
            t_naive = f"{b.seconds / naive.best.seconds:.2f}" if big else "-"
            s_naive = f"{row.stored / naive.stored:.2f}" if big else "-"
            py = max((v for k, v in b.peak_kib.items() if k in ("cli", "upload")), default=0)
            pgd = max((v for k, v in b.peak_kib.items() if k.endswith("pg_dump")), default=0)
            print(f"{row.method:<26}{b.seconds:>9.2f}{row.stored:>15,}{t_raw:>7}{t_naive:>8}{s_naive:>11}"
                  f"{fmt_mb(py):>10}{fmt_mb(pgd):>11}{fmt_mb(b.peak_kib.get('zstd', 0)):>8}")
        print("t/raw: against the raw pipe of the same zstd level. py RSS: peak (VmHWM) of the CLI's python process, "
              "or of the uploader for raw/naive.")
        print()
        head2 = (f"{'CPU seconds during the run':<26}{'ours':>7}{'postgres':>9}{'s3 srv':>8}{'prefect':>8}"
                 f"{'others':>8}{'machine':>8}{'in flow s':>10}{'API 503s':>9}")
        print(head2)
        print("-" * len(head2))
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
        print(f"load average before: {load_before}; after: {loadavg()}")
        if git_state() != commit_before:
            print(f"NOTE: the checkout changed during the run ({commit_before} → {git_state()}): each CLI run used "
                  "the code of its own start")
    return 0


if __name__ == "__main__":
    run_main(main)
