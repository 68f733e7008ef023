"""What the catalog says about a table a policy targets: columns and types, key, indexes, inheritance, and every
table a delete there reaches through foreign keys.

The reach is the whole graph, walked breadth first through ``pg_constraint``: each foreign key that references a
relation the delete removes rows from is one :class:`Reach` (with the path of keys that led there); an ``ON DELETE
CASCADE`` key adds its table to the walk (every level, each table once), ``SET NULL`` / ``SET DEFAULT`` change rows
there (listed, not walked: an update of the referencing column is not a delete), ``NO ACTION`` / ``RESTRICT`` make
the delete fail while a referencing row exists. Self-references count (a thread's replies), and so do keys that
lead back to the policy's table through others. A partitioned table is walked with its partitions (a key that
references the parent appears once, not once per partition); a cascade into a plain table with inheritance children
does not reach them (PostgreSQL's cascade deletes from ``ONLY`` that table). Each reached table carries its own
name and its ancestors' (:attr:`Reach.names`), so a protected parent protects its partitions.

A few queries per table reached, all through ``pg_catalog`` with names and oids as parameters (never spliced).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import psycopg

from charhub_ops.pgerrors import db_errors

__all__ = ["Reach", "TableShape", "table_shape"]

_SHAPE_SQL = """
WITH t AS (
  SELECT c.oid, c.relkind, greatest(c.reltuples, 0)::bigint AS est
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p'))
SELECT t.oid, t.relkind::text, t.est,
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
  (SELECT coalesce(array_agg(i.inhrelid::regclass::text ORDER BY i.inhrelid::regclass::text), '{}')
     FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = t.oid AND NOT c.relispartition)
FROM t"""

# the relation and its partitions, at every level (what a DELETE on it removes rows from)
_GROUP_SQL = """WITH RECURSIVE g(oid) AS (SELECT %(oid)s::oid UNION ALL
  SELECT i.inhrelid FROM pg_inherits i JOIN g ON i.inhparent = g.oid JOIN pg_class c ON c.oid = i.inhrelid
   WHERE c.relispartition)
SELECT array_agg(oid) FROM g"""

# the relation and its ancestors (partition or inheritance parents): the names protection looks at
_NAMES_SQL = """WITH RECURSIVE up(oid) AS (SELECT %(oid)s::oid UNION
  SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.oid)
SELECT n.nspname, c.relname FROM up JOIN pg_class c ON c.oid = up.oid JOIN pg_namespace n ON n.oid = c.relnamespace"""

# the foreign keys referencing a group; a partition's clone of a key whose parent references the same group is
# the parent's key again (left out)
_REFS_SQL = """
SELECT fk.conrelid, n.nspname, c.relname, fk.confdeltype::text,
  ARRAY(SELECT a.attname FROM unnest(fk.conkey) WITH ORDINALITY k(num, ord)
        JOIN pg_attribute a ON a.attrelid = fk.conrelid AND a.attnum = k.num ORDER BY k.ord),
  ARRAY(SELECT a.attname FROM unnest(fk.confkey) WITH ORDINALITY k(num, ord)
        JOIN pg_attribute a ON a.attrelid = fk.confrelid AND a.attnum = k.num ORDER BY k.ord)
FROM pg_constraint fk JOIN pg_class c ON c.oid = fk.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_constraint up ON up.oid = fk.conparentid
WHERE fk.contype = 'f' AND fk.confrelid = ANY(%(group)s) AND (up.oid IS NULL OR up.confrelid <> ALL(%(group)s))
ORDER BY c.relname, fk.conname"""

# confdeltype: a = no action, r = restrict, c = cascade, n = set null, d = set default
_ACTIONS = {"c": "ON DELETE CASCADE", "n": "ON DELETE SET NULL", "d": "ON DELETE SET DEFAULT",
            "a": "ON DELETE NO ACTION", "r": "ON DELETE RESTRICT"}
CHANGES = "cnd"  # the actions that delete or change rows in the referencing table


def _shown(schema: str, table: str) -> str:
    return f'"{table}"' if schema == "public" else f'"{schema}"."{table}"'


@dataclass(frozen=True)
class Reach:
    """One foreign key that references a table a delete on the policy's table removes rows from."""

    schema: str
    table: str  # the referencing table
    columns: tuple[str, ...]  # its referencing columns
    referenced: tuple[str, ...]  # the columns they reference
    action: str  # confdeltype: c cascade, n set null, d set default, a no action, r restrict
    path: tuple[str, ...] = ()  # the cascades that lead here from the policy's table (:meth:`edge` texts)
    names: tuple[tuple[str, str], ...] = ()  # (schema, table) of the referencing table and of its ancestors
    self_reference: bool = False  # the policy's table references itself here ON DELETE CASCADE (first level)
    returns: bool = False  # a cascade back into the policy's table through other tables

    def edge(self) -> str:
        return f"{_shown(self.schema, self.table)}({', '.join(self.columns)}) {_ACTIONS.get(self.action, self.action)}"

    def describe(self, origin: str) -> str:
        """``origin → key → … → this key`` (and what is special about it)."""
        note = " (self-reference)" if self.self_reference else " (back into the policy's table)" if self.returns else ""
        return " → ".join([origin, *self.path, self.edge()]) + note


@dataclass
class TableShape:
    columns: dict[str, str]  # name -> type ("USER-DEFINED" for enums, as information_schema says)
    key: list[str]  # the batch key: ["ctid"] for a plain table, the primary key of a partitioned one ([]: none)
    leading_index_columns: set[str] = field(default_factory=set)
    reaches: list[Reach] = field(default_factory=list)  # the whole reference graph, breadth first
    inheritance_children: list[str] = field(default_factory=list)  # children that are not partitions
    names: list[tuple[str, str]] = field(default_factory=list)  # (schema, table) of the table and its ancestors
    estimated_rows: int = 0


def table_shape(conn: psycopg.Connection, schema: str, table: str) -> TableShape | None:
    """The table's shape, or None when there is no such table (or view)."""
    with db_errors(f"read the catalog of {schema}.{table}"):
        row = conn.execute(_SHAPE_SQL, {"schema": schema, "table": table}).fetchone()
        if row is None:
            return None
        oid, relkind, estimated, columns, pkey, leading, children = row
        reaches = _walk(conn, oid)
        names = _names(conn, oid)
    key = ["ctid"] if relkind == "r" else list(pkey)  # plain table: batches by ctid; partitioned: by primary key
    return TableShape(columns=dict(columns), key=key, leading_index_columns=set(leading), reaches=reaches,
                      inheritance_children=list(children), names=names, estimated_rows=int(estimated))


def _group(conn: psycopg.Connection, oid: int) -> list[int]:
    return conn.execute(_GROUP_SQL, {"oid": oid}).fetchone()[0]


def _names(conn: psycopg.Connection, oid: int) -> list[tuple[str, str]]:
    return [(s, t) for s, t in conn.execute(_NAMES_SQL, {"oid": oid}).fetchall()]


def _walk(conn: psycopg.Connection, root: int) -> list[Reach]:
    """Every foreign key reaching the rows a delete on ``root`` removes, breadth first; each table walked once."""
    root_group = set(_group(conn, root))
    reaches: list[Reach] = []
    seen = {root}
    queue: deque[tuple[list[int], tuple[str, ...]]] = deque([(sorted(root_group), ())])
    while queue:
        group, path = queue.popleft()
        for oid, schema, table, action, cols, refcols in conn.execute(_REFS_SQL, {"group": group}).fetchall():
            into_root = oid in root_group and action == "c"
            reach = Reach(schema, table, tuple(cols), tuple(refcols), action, path, tuple(_names(conn, oid)),
                          self_reference=into_root and not path, returns=into_root and bool(path))
            reaches.append(reach)
            if action == "c" and oid not in seen:
                seen.add(oid)
                queue.append((_group(conn, oid), (*path, reach.edge())))
    return reaches
