"""What the catalog says about a table a policy targets: columns and types, key, references, indexes.

One query per table, all through ``pg_catalog`` with the names as parameters (never spliced into SQL).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from charhub_ops.pgerrors import db_errors

__all__ = ["TableShape", "table_shape"]

_SHAPE_SQL = """
WITH t AS (
  SELECT c.oid, c.relkind, greatest(c.reltuples, 0)::bigint AS est
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p'))
SELECT t.relkind::text, t.est,
  (SELECT coalesce(jsonb_object_agg(a.attname, CASE WHEN ty.typtype = 'e' THEN 'USER-DEFINED'
          ELSE format_type(a.atttypid, NULL) END), '{}')
     FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
    WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped),
  (SELECT coalesce(array_agg(a.attname ORDER BY k.ord), '{}')
     FROM pg_constraint pk CROSS JOIN LATERAL unnest(pk.conkey) WITH ORDINALITY k(num, ord)
     JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.num
    WHERE pk.conrelid = t.oid AND pk.contype = 'p'),
  (SELECT coalesce(array_agg(DISTINCT a.attname), '{}')
     FROM pg_index i JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = t.oid AND i.indisvalid),
  (SELECT coalesce(jsonb_agg(jsonb_build_array(fk.conrelid::regclass::text, fk.confdeltype::text,
          (SELECT string_agg(a.attname, ', ') FROM pg_attribute a
            WHERE a.attrelid = fk.conrelid AND a.attnum = ANY(fk.conkey)))), '[]')
     FROM pg_constraint fk WHERE fk.confrelid = t.oid AND fk.contype = 'f' AND fk.conrelid <> t.oid)
FROM t"""

# confdeltype: a = no action, r = restrict, c = cascade, n = set null, d = set default
_ACTIONS = {"c": "ON DELETE CASCADE", "n": "ON DELETE SET NULL", "d": "ON DELETE SET DEFAULT",
            "a": "ON DELETE NO ACTION", "r": "ON DELETE RESTRICT"}


@dataclass
class TableShape:
    columns: dict[str, str]  # name -> type ("USER-DEFINED" for enums, as information_schema says)
    key: list[str]  # the batch key: ["ctid"] for a plain table, the primary key of a partitioned one ([]: none)
    leading_index_columns: set[str] = field(default_factory=set)
    cascades: list[str] = field(default_factory=list)  # references that change rows elsewhere
    restricts: list[str] = field(default_factory=list)  # references that make a delete fail
    estimated_rows: int = 0


def table_shape(conn: psycopg.Connection, schema: str, table: str) -> TableShape | None:
    """The table's shape, or None when there is no such table (or view)."""
    with db_errors(f"read the catalog of {schema}.{table}"):
        row = conn.execute(_SHAPE_SQL, {"schema": schema, "table": table}).fetchone()
    if row is None:
        return None
    relkind, estimated, columns, pkey, leading, refs = row
    key = ["ctid"] if relkind == "r" else list(pkey)  # plain table: batches by ctid; partitioned: by primary key
    cascades, restricts = [], []
    for referencing, action, cols in refs:
        text = f"{referencing}({cols}) {_ACTIONS.get(action, action)}"
        (cascades if action in "cnd" else restricts).append(text)
    return TableShape(columns=dict(columns), key=key, leading_index_columns=set(leading),
                      cascades=sorted(cascades), restricts=sorted(restricts), estimated_rows=int(estimated))
