"""The `charhub_ops` schema (migration history, cleanup cursors) is created on first use by whichever runs first —
a migrate and a cleanup of the same database may start together on two workers. CREATE … IF NOT EXISTS is not
safe against a concurrent twin (the loser fails on pg_namespace's unique index), so the DDL is serialized."""

from __future__ import annotations

import threading

import psycopg

from charhub_ops.cleanup.rows import ensure_cursors
from charhub_ops.migrations.ledger import ensure_history


def _first_uses_at_once(database: str) -> list[BaseException]:
    """Eight sessions (four migrate, four cleanup) creating their objects at the same instant; their errors."""
    start, errors = threading.Barrier(8), []

    def first_use(ensure) -> None:
        try:
            with psycopg.connect(database, autocommit=True) as conn:
                start.wait()
                ensure(conn)
        except BaseException as exc:  # noqa: BLE001 - asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(f,)) for f in [ensure_history, ensure_cursors] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_first_uses_create_the_schema_once_without_error(database):
    with psycopg.connect(database, autocommit=True) as admin:
        for _ in range(5):
            admin.execute("DROP SCHEMA IF EXISTS charhub_ops CASCADE")
            errors = _first_uses_at_once(database)
            assert not errors, errors[0]
            tables = admin.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'charhub_ops'").fetchone()[0]
            assert tables == 2
