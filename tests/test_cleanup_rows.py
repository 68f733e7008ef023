"""The batched deleter against a real PostgreSQL with a CharHub-shaped schema."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from charhub_ops.cleanup.policy import PolicyFile
from charhub_ops.cleanup.rows import RowOptions, cursor_key, read_cursor
from charhub_ops.cleanup.run import plan_policies, run_policies, run_policy
from charhub_ops.errors import DatabaseError
from tests.harness.charhub_schema import create_charhub_schema
from tests.harness.usage_writer import UsageWriter

NOW = datetime(2026, 6, 1, tzinfo=UTC)
FAST = RowOptions(pause=0.0, pause_ratio=0.0, floor=10, max_batch=1, target_batch_seconds=3600)  # fixed sizes
INDEX = FAST.model_copy(update={"sweep": "index"})
BLOCKS = FAST.model_copy(update={"sweep": "blocks"})
SWEEPS = pytest.mark.parametrize("opts", [INDEX, BLOCKS], ids=["index", "blocks"])


@pytest.fixture
def db(database):
    create_charhub_schema(database)
    with psycopg.connect(database, autocommit=True) as conn:
        yield conn


def fill_usage(conn, rows: int, first_day: int = 100, last_day: int = 80) -> None:
    """``rows`` UsageLog rows spread evenly from NOW - first_day to NOW - last_day; every other one processed."""
    span = (first_day - last_day) * 86400
    conn.execute("""INSERT INTO "UsageLog" (id, "timestamp", processed)
        SELECT 'u' || g, (%(now)s::timestamptz AT TIME ZONE 'UTC') - make_interval(days => %(first)s)
               + make_interval(secs => (g - 0.5) * %(span)s::float / %(rows)s), g %% 2 = 0
        FROM generate_series(1, %(rows)s) g""", {"now": NOW, "first": first_day, "span": span, "rows": rows})


def plans(conn, **policy):
    base = {"table": "UsageLog", "timestamp_column": "timestamp", "older_than": "90d", "where": {"processed": True}}
    return plan_policies(conn, PolicyFile.model_validate({"policies": [{**base, **policy}]}))


def counts(conn) -> dict[tuple[bool, bool], int]:
    """Rows left by (older than the cutoff, processed)."""
    rows = conn.execute("""SELECT "timestamp" < %s::timestamptz AT TIME ZONE 'UTC', processed, count(*)
                           FROM "UsageLog" GROUP BY 1, 2""", [NOW - timedelta(days=90)]).fetchall()
    return {(old, done): n for old, done, n in rows}


@SWEEPS
def test_only_matching_rows_go_and_a_dry_run_deletes_nothing(db, opts):
    fill_usage(db, 4000)
    before = counts(db)
    assert before[(True, True)] == 1000 and before[(True, False)] == 1000  # both sides of the boundary and condition
    (plan,) = plans(db, batch_size=300)
    (dry,) = run_policies(db, [plan], NOW, opts, dry_run=True)
    assert (dry.matched, dry.deleted, dry.batches, dry.stopped) == (1000, 0, 0, "dry-run")
    assert counts(db) == before
    (done,) = run_policies(db, [plan], NOW, opts, dry_run=False)
    assert (done.matched, done.deleted, done.stopped, done.cursor, done.sweep) == (1000, 1000, "done", None, opts.sweep)
    if opts.sweep == "index":
        assert done.batches == 5  # 4 of 300, one of 100, then the empty one that says "done"
    else:  # 300 rows' worth of blocks (100 rows a block guessed: never analyzed) per batch, to the table's end
        blocks = db.execute("""SELECT pg_relation_size('"UsageLog"') / 8192""").fetchone()[0]
        assert done.batches == -(-blocks // 3)
    after = counts(db)
    assert (True, True) not in after
    assert after[(True, False)] == 1000 and after[(False, True)] == 1000 and after[(False, False)] == 1000


def test_fast_batches_grow_up_to_max_batch_and_pauses_follow_the_batch(db):
    fill_usage(db, 4000)
    (plan,) = plans(db, batch_size=100)
    pauses = []
    from charhub_ops.cleanup import rows

    opts = RowOptions(pause=0.01, pause_ratio=0.25, floor=10, max_batch=1000, sweep="index")
    result = rows.delete_expired(db, plan, NOW - timedelta(days=90), opts, matched=1000,
                                 clock=lambda: 0.0, sleep=pauses.append)  # every batch takes no time
    assert (result.deleted, result.stopped) == (1000, "done")
    assert result.batches == 6  # 100 + 150 + 225 + 337 + the 188 left (of 505), then the empty one
    assert result.batch_size == 505 and pauses == [0.01] * 5  # the short batch did not grow it further


@SWEEPS
def test_a_run_stopped_by_its_budget_resumes_where_it_stopped(db, opts):
    fill_usage(db, 2000)
    (plan,) = plans(db, batch_size=100, max_rows=250)
    first = run_policy(db, plan, NOW, opts, dry_run=False)
    assert (first.deleted, first.stopped) == (250, "max_rows")
    assert first.cursor is not None
    assert read_cursor(db, cursor_key(plan.policy)) == first.cursor  # kept in charhub_ops.cleanup_cursors
    oldest_left = db.execute("""SELECT min("timestamp") FROM "UsageLog" WHERE processed""").fetchone()[0]
    if opts.sweep == "index":
        assert datetime.fromisoformat(first.cursor) <= oldest_left
    second = run_policy(db, plan, NOW, opts, dry_run=False)
    assert (second.matched, second.deleted, second.stopped) == (250, 250, "max_rows")
    assert second.cursor != first.cursor  # went on from where the first run stopped
    if opts.sweep == "blocks":  # the block of the 250th row: the next run starts there
        assert int(second.cursor.removeprefix("block:")) > int(first.cursor.removeprefix("block:")) > 0
    (unlimited,) = plans(db, batch_size=100)
    third = run_policy(db, unlimited, NOW, opts, dry_run=False)  # same policy key: the cursor is shared
    assert (third.deleted, third.stopped, third.cursor) == (0, "done", None)
    assert counts(db).get((True, True)) is None


@pytest.mark.parametrize(("where", "expected"), [
    ({"rejectedAt": None}, 0),  # a NULL timestamp is never older than the cutoff
    ({"rejectedAt": "not null"}, 2), ({"rejectedAt": "NOT NULL", "status": "FAILED"}, 1),
    ({"status": ["REJECTED", "FAILED"]}, 2), ({"status": "PENDING"}, 0), ({"url": "prod/b.png"}, 1),
])
def test_the_where_vocabulary(db, where, expected):
    db.execute("""INSERT INTO "CuratedImage" (id, url, status, "rejectedAt") VALUES
        ('1', 'prod/a.png', 'PENDING', NULL), ('2', 'prod/b.png', 'REJECTED', '2026-01-01'),
        ('3', 'prod/c.png', 'FAILED', '2026-01-02')""")
    (plan,) = plan_policies(db, PolicyFile.model_validate({"policies": [{
        "table": "CuratedImage", "timestamp_column": "rejectedAt", "older_than": "30d", "where": where}]}))
    assert run_policy(db, plan, NOW, FAST, dry_run=True).matched == expected


@SWEEPS
def test_a_time_budget_ends_the_run_cleanly(db, opts):
    fill_usage(db, 1000)
    (plan,) = plans(db, batch_size=50, max_seconds=3)
    from charhub_ops.cleanup import rows

    ticks = iter(range(10_000))
    result = rows.delete_expired(db, plan, NOW - timedelta(days=90), opts, matched=250,
                                 clock=lambda: float(next(ticks)), sleep=lambda s: None)
    assert result.stopped == "max_seconds" and 0 < result.deleted < 250
    rest = run_policy(db, plans(db, batch_size=50)[0], NOW, opts, dry_run=False)
    assert rest.deleted == 250 - result.deleted


def test_lock_timeouts_shrink_the_batch_instead_of_failing(db, database):
    fill_usage(db, 800)
    (plan,) = plans(db, batch_size=200)
    blocker = psycopg.connect(database)
    blocker.execute('LOCK TABLE "UsageLog" IN SHARE MODE')  # blocks DELETE's ROW EXCLUSIVE lock
    pauses = []

    def sleep(seconds):
        pauses.append(seconds)
        if len(pauses) == 3:
            blocker.rollback()

    from charhub_ops.cleanup import rows

    opts = RowOptions(lock_timeout=0.05, pause=0.0, floor=10, sweep="index")
    result = rows.delete_expired(db, plan, NOW - timedelta(days=90), opts, matched=200, sleep=sleep)
    blocker.close()
    assert result.lock_waits == 3 and result.batch_size == 85  # 200 → 150 → 113 → 85: a quarter off each time
    assert (result.deleted, result.stopped) == (200, "done")


def test_a_table_locked_for_good_fails_transient_at_the_floor(db, database):
    fill_usage(db, 100)
    (plan,) = plans(db, batch_size=20)
    with psycopg.connect(database) as blocker:
        blocker.execute('LOCK TABLE "UsageLog" IN SHARE MODE')
        with pytest.raises(DatabaseError, match="still timing out at 10 rows per batch") as caught:
            run_policy(db, plan, NOW, RowOptions(lock_timeout=0.02, pause=0.0, floor=10, sweep="index"),
                       dry_run=False)
    assert caught.value.transient


@pytest.mark.parametrize("sweep", ["index", "blocks"])
def test_a_concurrent_writer_is_not_blocked_and_held_rows_are_skipped(db, database, sweep):
    """SKIP LOCKED: the cleaner never waits for rows a writer holds (they stay for the next run); a writer
    waits for the cleaner's rows at most one short batch (bounded by the batch's statement_timeout)."""
    fill_usage(db, 100_000)
    (plan,) = plans(db, batch_size=2000)
    holder = psycopg.connect(database)
    held = [r[0] for r in holder.execute("""SELECT id FROM "UsageLog" WHERE processed ORDER BY "timestamp"
                                            LIMIT 5 FOR UPDATE""").fetchall()]
    writer = UsageWriter(database, lambda i: f"u{1 + i * 37 % 100_000}")
    writer.start()
    opts = RowOptions(lock_timeout=0.2, statement_timeout=5.0, pause=0.01, sweep=sweep)
    result = run_policy(db, plan, NOW, opts, dry_run=False)
    writer.stop.set()
    writer.join()
    assert not writer.errors
    assert result.stopped == "done" and result.deleted <= 25_000 - len(held)  # the writer may hold one more a moment
    left = db.execute("""SELECT id FROM "UsageLog" WHERE processed AND "timestamp" < %s::timestamptz AT TIME ZONE 'UTC'
                         """, [result.cutoff]).fetchall()
    assert set(held) <= {r[0] for r in left} and len(left) == 25_000 - result.deleted
    assert result.lock_waits == 0  # the held rows never made the cleaner wait
    assert result.skip_locked_batches >= 1 and result.sweep == sweep  # the batch holding them was rerun SKIP LOCKED
    assert max(writer.waits) < opts.statement_timeout  # the design's bound; the bench reports the measured figure
    print(f"writer: {len(writer.waits)} statements, worst wait {max(writer.waits) * 1000:.0f} ms; slowest batch "
          f"{result.slowest_batch * 1000:.0f} ms")
    holder.rollback()
    holder.close()
    again = run_policy(db, plan, NOW, opts, dry_run=False)
    assert again.deleted == len(left)  # the next run takes what was skipped


# --- cascades through a self-reference (issue 16, item 5) ---------------------------------------------

THREADS = {  # id: (parent, age in days); the policy deletes messages older than 30 days
    "p1": (None, 100), "r1": ("p1", 1),  # an expired parent with a fresh reply: both stay
    "p2": (None, 100), "r2": ("p2", 90), "r3": ("r2", 80),  # an expired thread: all of it goes
    "p3": (None, 100), "r4": ("p3", 60), "r5": ("r4", 1),  # a fresh reply two levels down keeps its ancestors
    "p4": (None, 100),  # no replies
}


def make_threads(conn) -> None:
    conn.execute("""ALTER TABLE "Message" ADD "parentId" TEXT REFERENCES "Message"("id") ON DELETE CASCADE;
        INSERT INTO "Conversation" (id) VALUES ('c')""")
    for id_, (parent, days) in THREADS.items():
        conn.execute("""INSERT INTO "Message" (id, "conversationId", "parentId", "createdAt")
            VALUES (%s, 'c', %s, (%s::timestamptz AT TIME ZONE 'UTC') - make_interval(days => %s))""",
                     [id_, parent, NOW, days])


def message_plan(conn):
    return plan_policies(conn, PolicyFile.model_validate({"policies": [{
        "table": "Message", "timestamp_column": "createdAt", "older_than": "30d", "cascade": "allowed"}]}))[0]


@SWEEPS
def test_a_fresh_reply_is_never_deleted_through_its_expired_parent(db, opts):
    make_threads(db)
    plan = message_plan(db)
    dry = run_policy(db, plan, NOW, opts, dry_run=True)
    assert dry.matched == 4  # p2, r2, r3 and p4; not p1, p3, r4 (fresh replies below them)
    result = run_policy(db, plan, NOW, opts, dry_run=False)
    left = {r[0] for r in db.execute('SELECT id FROM "Message"').fetchall()}
    assert left == {"p1", "r1", "p3", "r4", "r5"}
    assert result.stopped == "done"


def test_a_reply_committed_while_the_batch_waits_for_its_parent_survives(db, database):
    """The app inserts a reply to an expired parent (its transaction holds the parent's key-share lock) while the
    cleaner's DELETE waits for that lock; the reply commits: the cascade would delete it. The batch runs at
    REPEATABLE READ, so the cascade sees a row its snapshot did not and fails with a serialization error; the
    batch is rerun and now leaves the parent (it has a fresh reply)."""
    make_threads(db)
    plan = message_plan(db)
    app = psycopg.connect(database)
    app.execute("""INSERT INTO "Message" (id, "conversationId", "parentId") VALUES ('late', 'c', 'p4')""")
    opts = RowOptions(row_wait=30.0, lock_timeout=30.0, statement_timeout=30.0, pause=0.0, sweep="index")
    cleaner = Cleaner(database, plan, opts)
    cleaner.start()
    wait_until_blocked(db, cleaner)
    app.commit()
    app.close()
    cleaner.join()
    assert cleaner.error is None
    left = {r[0] for r in db.execute('SELECT id FROM "Message"').fetchall()}
    assert {"late", "p4"} <= left and not {"p2", "r2", "r3"} & left
    assert cleaner.result.lock_waits == 1  # the batch that met the reply failed and was rerun


# --- the DELETE re-checks what it selected (issue 16, item 6) ------------------------------------------

class Cleaner(threading.Thread):
    """run_policy on its own connection; ``pid`` is its backend's."""

    def __init__(self, url, plan, opts):
        super().__init__(daemon=True)
        self.conn = psycopg.connect(url, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.plan, self.opts, self.error, self.result = plan, opts, None, None

    def run(self):
        try:
            self.result = run_policy(self.conn, self.plan, NOW, self.opts, dry_run=False)
        except BaseException as exc:  # noqa: BLE001 - asserted by the test
            self.error = exc
        finally:
            self.conn.close()


def wait_until_blocked(conn, cleaner, seconds: float = 30.0) -> None:
    """Until the cleaner's backend waits for a lock (its statement has selected its rows and is deleting)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if conn.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                        [cleaner.pid]).fetchone() == (True,):
            return
        assert cleaner.is_alive(), cleaner.error
        time.sleep(0.01)
    raise AssertionError("the cleaner never waited for the app's row")


JOBS = """CREATE TABLE "Job" ("id" TEXT, "updatedAt" TIMESTAMP(3) NOT NULL, "processed" BOOLEAN NOT NULL,
    PRIMARY KEY ("id")) {partitioning};
CREATE INDEX ON "Job" ("updatedAt");"""
PARTITIONS = """CREATE TABLE "Job_0" PARTITION OF "Job" FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE "Job_1" PARTITION OF "Job" FOR VALUES WITH (MODULUS 2, REMAINDER 1);"""


@pytest.mark.parametrize("update", ['processed = false', '"updatedAt" = now()'], ids=["where", "timestamp"])
@pytest.mark.parametrize(("partitioned", "sweep"), [(True, "index"), (False, "index"), (False, "blocks")],
                         ids=["partitioned", "plain-index", "plain-blocks"])
def test_a_row_the_app_changes_while_the_batch_waits_for_it_is_not_deleted(db, database, partitioned, sweep,
                                                                            update):
    db.execute(JOBS.format(partitioning='PARTITION BY HASH ("id")' if partitioned else "")
               + (PARTITIONS if partitioned else ""))
    db.execute("""INSERT INTO "Job" SELECT 'j' || g, (%s::timestamptz AT TIME ZONE 'UTC') - make_interval(days => 100),
                  true FROM generate_series(1, 50) g""", [NOW])
    (plan,) = plan_policies(db, PolicyFile.model_validate({"policies": [{
        "table": "Job", "timestamp_column": "updatedAt", "older_than": "30d", "where": {"processed": True}}]}))
    app = psycopg.connect(database)
    app.execute(f'UPDATE "Job" SET {update} WHERE id = %s', ["j7"])  # holds j7 until it commits
    opts = RowOptions(row_wait=30.0, lock_timeout=30.0, statement_timeout=30.0, pause=0.0, sweep=sweep)
    cleaner = Cleaner(database, plan, opts)
    cleaner.start()
    wait_until_blocked(db, cleaner)  # the batch has selected j7 (the app's change is not committed) and waits
    app.commit()
    app.close()
    cleaner.join()
    assert cleaner.error is None
    assert db.execute('SELECT id FROM "Job"').fetchall() == [("j7",)]
    assert cleaner.result.deleted == 49 and cleaner.result.skip_locked_batches == 0
