"""`pitr recover-table`: deleted rows of one table come back beside it while the rest keeps its newer writes."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from charhub_ops.errors import ConfigError, NotFoundError
from charhub_ops.pitr.recover import plan_recovery, recover_table, recovered_name, split_table
from charhub_ops.postgres import PsycopgSession
from tests.pitr_restore_support import archive_now, backup, base_url, core, new_cluster


@pytest.fixture(scope="module")
def cluster():
    c = new_cluster("recover")
    with c.connect() as conn:
        conn.execute("CREATE DATABASE app")
    backup(c, "full")
    yield c
    c.remove()


def test_split_and_name():
    assert split_table("CreditTransaction") == ("public", "CreditTransaction")
    assert split_table("billing.Order") == ("billing", "Order")
    with pytest.raises(ConfigError, match="--table"):
        split_table(".x")
    at = datetime(2026, 12, 5, 1, 2, 3, tzinfo=UTC)
    assert recovered_name("Message", at) == "Message_recovered_20261205010203"
    assert len(recovered_name("x" * 63, at).encode()) == 63


def _count(conn, table: str) -> int:
    return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def test_recover_table_brings_back_deleted_rows_and_touches_nothing_else(cluster):
    with cluster.connect("app") as conn:
        conn.execute('CREATE TABLE "Message" (id serial PRIMARY KEY, body text NOT NULL, '
                     'sent timestamptz DEFAULT now(), CHECK (length(body) > 0))')
        conn.execute('CREATE TABLE "Character" (id int PRIMARY KEY, name text)')
        conn.execute('INSERT INTO "Message" (body) SELECT $$m$$ || g FROM generate_series(1, 50) g')
        conn.execute("""INSERT INTO "Character" VALUES (1, 'old')""")
        time.sleep(1.1)
        at = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(1.1)
        conn.execute('DELETE FROM "Message" WHERE id > 10')  # the bad DELETE
        conn.execute("""INSERT INTO "Character" VALUES (2, 'newer write')""")  # work that must survive
    archive_now(cluster)
    url = base_url(cluster, "app")
    with PsycopgSession(url) as session:
        plan = plan_recovery(session, "Message", at, "app")
    assert plan.live_exists and "nothing else is changed" in plan.describe()
    result = recover_table(core(cluster).pgb, plan, url, work_dir=str(cluster.base))
    assert (result.rows, result.columns) == (50, 3)
    with cluster.connect("app") as conn:
        assert _count(conn, plan.new_name) == 50
        assert _count(conn, "Message") == 10  # the live table untouched
        assert _count(conn, "Character") == 2  # newer writes kept
        constraints = conn.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass",
                                   (f'"{plan.new_name}"',)).fetchone()[0]
        assert constraints == 0
        tables = {r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = "
                                             "'public'::regnamespace")}
    assert tables == {"Message", "Character", plan.new_name}
    assert not any(p.name.startswith("charhub-ops-pitr-scratch-") for p in cluster.base.iterdir())
    with PsycopgSession(url) as session, pytest.raises(ConfigError, match="already exists"):
        plan_recovery(session, "Message", at, "app")  # the target name exists now: refused


def test_recover_a_table_that_did_not_exist_then(cluster):
    with cluster.connect("app") as conn:
        at = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(1.1)
        conn.execute("CREATE TABLE later (x int)")
    archive_now(cluster)
    url = base_url(cluster, "app")
    with PsycopgSession(url) as session:
        plan = plan_recovery(session, "later", at, "app")
    with pytest.raises(NotFoundError, match="did not exist"):
        recover_table(core(cluster).pgb, plan, url, work_dir=str(cluster.base))
    with cluster.connect("app") as conn:
        assert conn.execute("SELECT to_regclass(%s)", (plan.new_name,)).fetchone()[0] is None
