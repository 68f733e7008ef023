"""The two ways a batch finds its rows, as SQL: along the timestamp index, or block by block through the heap.

``index`` — each batch takes the oldest ``n`` matching rows in timestamp order (``ORDER BY ts LIMIT n``) from
the cursor onward; deletes by ``ctid`` (a TID scan, no index probe per row) or, on a partitioned table, by
primary key. Right when the expired rows are a small share of a big table: it reads only them.

``blocks`` — each batch deletes the matching rows of a range of heap blocks (``ctid >= '(lo,0)' AND ctid <
'(hi,0)'``: a TID range scan, PostgreSQL ≥ 14), the cursor being the next block. It reads the table once per run,
in physical order, and deletes at the speed of one single ``DELETE`` (measured in ``bench/cleanup_bench.py``):
right when the expired rows are a large share of the table, or when no index leads with the timestamp.

Either statement comes in two forms. The fast one is a plain ``DELETE`` run with a short ``lock_timeout``; if a
writer holds one of its rows longer than that, the batch is rolled back and rerun with ``FOR UPDATE SKIP LOCKED``
(GitLab's form: rows a writer holds are passed over and wait for the next run). Locking every row before
deleting it writes each tuple twice, so ``SKIP LOCKED`` only runs when a row is actually held.
Identifiers only through ``psycopg.sql``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import psycopg
from psycopg import sql

from charhub_ops.cleanup.policy import RowPolicy, TablePlan, is_not_null
from charhub_ops.pgerrors import db_errors

__all__ = ["BLOCK_PREFIX", "conditions", "table_name", "index_statement", "blocks_statement", "heap_blocks",
           "parse_position"]

BLOCK_PREFIX = "block:"  # a blocks cursor is stored as "block:<n>"; an index cursor as an ISO timestamp


def table_name(policy: RowPolicy) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(policy.schema_name), sql.Identifier(policy.table))


def conditions(plan: TablePlan, with_cursor: bool) -> tuple[sql.Composable, dict]:
    """``ts < %(cutoff)s`` [``AND ts >= %(position)s``], the policy's ``where`` vocabulary and, on a table that
    cascades to itself, :func:`_no_unselected_descendant`, as SQL + params. Unqualified column names: they refer to
    the nearest table, the statement's own."""
    where, params = _selects(plan.policy)
    parts = [where]
    if with_cursor:
        parts.append(sql.SQL("{} >= %(position)s").format(sql.Identifier(plan.policy.timestamp_column)))
    if plan.self_references:
        parts.append(_no_unselected_descendant(plan, where))
    return sql.SQL(" AND ").join(parts), params


def _selects(policy: RowPolicy) -> tuple[sql.Composable, dict]:
    """The policy's own predicate: ``ts < %(cutoff)s`` and its ``where``."""
    parts = [sql.SQL("{} < %(cutoff)s").format(sql.Identifier(policy.timestamp_column))]
    params: dict = {}
    for i, (column, value) in enumerate(sorted(policy.where.items())):
        col = sql.Identifier(column)
        if value is None:
            parts.append(sql.SQL("{} IS NULL").format(col))
        elif is_not_null(value):
            parts.append(sql.SQL("{} IS NOT NULL").format(col))
        else:
            values = value if isinstance(value, list) else [value]
            name = f"w{i}"
            params[name] = [str(v) for v in values] if isinstance(values[0], str) else values
            template = "{}::text = ANY(%({})s::text[])" if isinstance(values[0], str) else "{} = ANY(%({})s)"
            parts.append(sql.SQL(template).format(col, sql.SQL(name)))
    return sql.SQL(" AND ").join(parts), params


def _no_unselected_descendant(plan: TablePlan, selects: sql.Composable) -> sql.Composable:
    """``NOT EXISTS`` a row anywhere below this one through the table's ``ON DELETE CASCADE`` self-references
    that ``selects`` does not select: deleting this row would delete that one (a fresh reply of an expired
    message). A recursive walk down from the row (``UNION``: ends on cyclic data); index the referencing columns.
    The outer row is named by the table's bare name, which the walk's alias ``_c`` hides inside it."""
    policy = plan.policy
    keys = sorted({col for _, referenced in plan.self_references for col in referenced})
    slot = {col: sql.Identifier(f"_charhub_k{i}") for i, col in enumerate(keys)}
    columns = sql.SQL(", ").join(sql.SQL("_c.{}").format(sql.Identifier(k)) for k in keys)
    names = sql.SQL(", ").join([*slot.values(), sql.Identifier("_charhub_ok")])
    return sql.SQL(
        "NOT EXISTS (WITH RECURSIVE _d({names}) AS ("
        "SELECT {columns}, coalesce(({selects}), false) FROM {table} _c WHERE {first} UNION "
        "SELECT {columns}, coalesce(({selects}), false) FROM {table} _c JOIN _d ON {next}) "
        "SELECT FROM _d WHERE NOT _d._charhub_ok)").format(
        names=names, columns=columns, selects=selects, table=table_name(policy),
        first=_child_of(plan, sql.Identifier(policy.table), sql.Identifier),
        next=_child_of(plan, sql.Identifier("_d"), lambda col: slot[col]))


def _child_of(plan: TablePlan, parent: sql.Composable, column: Callable[[str], sql.Composable]) -> sql.Composable:
    """``_c`` references ``parent`` through any of the self-references (``column``: a referenced column's name
    in ``parent``)."""
    each = []
    for cols, refs in plan.self_references:
        pairs = [sql.SQL("_c.{} = {}.{}").format(sql.Identifier(c), parent, column(r))
                 for c, r in zip(cols, refs, strict=True)]
        each.append(sql.SQL("({})").format(sql.SQL(" AND ").join(pairs)))
    return sql.SQL(" OR ").join(each)


def _lock(skip_locked: bool) -> sql.SQL:
    return sql.SQL(" FOR UPDATE SKIP LOCKED" if skip_locked else "")


def index_statement(plan: TablePlan, with_cursor: bool, skip_locked: bool) -> tuple[sql.Composed, dict]:
    """The oldest ``%(limit)s`` matching rows from the cursor on → ``(count, newest timestamp deleted)``."""
    policy = plan.policy
    where, params = conditions(plan, with_cursor)
    if plan.key == ["ctid"]:  # a TID scan: no index probe per row
        key, match = sql.SQL("ctid"), sql.SQL("ctid = ANY(ARRAY(SELECT ctid FROM batch))")
    else:  # partitioned: ctid is not unique across partitions, the primary key is
        key = sql.SQL(", ").join(sql.Identifier(k) for k in plan.key)
        match = sql.SQL("({key}) IN (SELECT {key} FROM batch)").format(key=key)
    statement = sql.SQL(
        "WITH batch AS (SELECT {key} FROM {table} WHERE {where} ORDER BY {ts} LIMIT %(limit)s{lock}), "
        "gone AS (DELETE FROM {table} WHERE {match} AND {where} RETURNING {ts} AS ts) "
        "SELECT count(*), max(ts) FROM gone").format(
        key=key, match=match, table=table_name(policy), where=where, lock=_lock(skip_locked),
        ts=sql.Identifier(policy.timestamp_column))
    return statement, params


def blocks_statement(plan: TablePlan, limited: bool, skip_locked: bool) -> tuple[sql.Composed, dict]:
    """Delete the matching rows of blocks ``[%(lo)s, %(hi)s)``. ``limited`` (the last batch of a ``max_rows``
    budget): at most ``%(limit)s`` rows, and the statement returns ``(count, the last block a row was deleted
    from)`` — the next batch starts there; otherwise a plain ``DELETE`` (the cursor's rowcount is the count:
    no RETURNING to materialise) and the next batch starts at ``hi``."""
    policy = plan.policy
    where, params = conditions(plan, with_cursor=False)
    table = table_name(policy)
    in_range = sql.SQL("ctid >= format('(%%s,0)', %(lo)s::bigint)::tid "
                       "AND ctid < format('(%%s,0)', %(hi)s::bigint)::tid AND {}").format(where)
    if not (limited or skip_locked):
        return sql.SQL("DELETE FROM {table} WHERE {in_range}").format(table=table, in_range=in_range), params
    match = sql.SQL("ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {in_range}{limit}{lock}))").format(
        table=table, in_range=in_range, limit=sql.SQL(" LIMIT %(limit)s" if limited else ""), lock=_lock(skip_locked))
    match = sql.SQL("{} AND {}").format(match, where)  # the DELETE repeats the predicate (a row changed since)
    if not limited:
        return sql.SQL("DELETE FROM {table} WHERE {match}").format(table=table, match=match), params
    return sql.SQL("WITH gone AS (DELETE FROM {table} WHERE {match} RETURNING (ctid::text::point)[0] AS blk) "
                   "SELECT count(*), max(blk)::bigint FROM gone").format(table=table, match=match), params


def heap_blocks(conn: psycopg.Connection, policy: RowPolicy) -> tuple[int, float]:
    """(the table's size in blocks now, rows per block as the statistics say; 0 when never analyzed)."""
    with db_errors(f"read the size of {policy.name}"):
        blocks, pages, tuples = conn.execute(
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::bigint, c.relpages, c.reltuples "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            [policy.schema_name, policy.table]).fetchone()
    return int(blocks), (max(tuples, 0) / pages if pages > 0 else 0.0)


def parse_position(position: str | None, sweep: str) -> str | datetime | int | None:
    """A stored cursor in the sweep's terms (a block number or a timestamp text); one of the other sweep: None."""
    if position is None:
        return None
    if sweep == "blocks":
        return int(position.removeprefix(BLOCK_PREFIX)) if position.startswith(BLOCK_PREFIX) else None
    return None if position.startswith(BLOCK_PREFIX) else position
