"""A varied schema for round-trip tests, and per-table content hashes to compare databases."""

from __future__ import annotations

import psycopg
from psycopg import sql

VARIED_SCHEMA = """
CREATE TYPE mood AS ENUM ('happy', 'sad', 'neutral');
CREATE SEQUENCE ticket_seq START 1000 INCREMENT 7;
CREATE TABLE "Character" (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    profile jsonb NOT NULL DEFAULT '{}',
    avatar bytea,
    tags text[] NOT NULL DEFAULT '{}',
    scores int[],
    mood mood NOT NULL DEFAULT 'neutral',
    created_at timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z',
    CHECK (char_length(name) > 0)
);
CREATE INDEX character_profile_gin ON "Character" USING gin (profile);
CREATE TABLE "UsageLog" (
    id bigint PRIMARY KEY DEFAULT nextval('ticket_seq'),
    character_id bigint REFERENCES "Character"(id) ON DELETE CASCADE,
    "timestamp" timestamptz NOT NULL,
    amount numeric(12, 4),
    processed boolean NOT NULL DEFAULT false
);
CREATE INDEX usagelog_ts ON "UsageLog" ("timestamp");
CREATE VIEW happy_characters AS SELECT id, name FROM "Character" WHERE mood = 'happy';
CREATE FUNCTION character_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM "Character"';
CREATE SCHEMA billing;
CREATE TABLE billing."CreditTransaction" (id uuid PRIMARY KEY, amount bigint NOT NULL, note text);
"""

FILL = """
INSERT INTO "Character" (name, profile, avatar, tags, scores, mood)
SELECT 'char-' || g, jsonb_build_object('n', g, 'nested', jsonb_build_object('s', repeat('x', g %% 50))),
       decode(md5(g::text), 'hex'), ARRAY['t' || (g %% 5), 'tag with space'], ARRAY[g, g * 2, NULL],
       (ARRAY['happy', 'sad', 'neutral']::mood[])[1 + g %% 3]
FROM generate_series(1, %(n)s) g;
INSERT INTO "UsageLog" (character_id, "timestamp", amount, processed)
SELECT 1 + (g %% %(n)s), '2026-01-01'::timestamptz + g * interval '1 minute', g / 7.0, g %% 2 = 0
FROM generate_series(1, %(n)s * 3) g;
INSERT INTO billing."CreditTransaction" (id, amount, note)
SELECT md5(g::text)::uuid, g * 100, CASE WHEN g %% 4 = 0 THEN NULL ELSE E'line\\nbreak ''quoted'' \\\\ ' || g END
FROM generate_series(1, %(n)s) g;
SELECT nextval('ticket_seq');
"""


def fill_sql(rows: int) -> str:
    return FILL.replace("%(n)s", str(int(rows))).replace("%%", "%")


def create_varied_schema(url: str, rows: int = 500) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(VARIED_SCHEMA)
        conn.execute(fill_sql(rows))


def table_hashes(url: str) -> dict[str, tuple[int, str]]:
    """{schema.table: (row count, md5 of all rows in a stable order)} plus sequence values."""
    out: dict[str, tuple[int, str]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') "
                            "FROM {}.{} t").format(sql.Identifier(schema), sql.Identifier(table))
            out[f"{schema}.{table}"] = tuple(conn.execute(query).fetchone())
        for (seq,) in conn.execute("SELECT sequencename FROM pg_sequences").fetchall():
            value = conn.execute(sql.SQL("SELECT last_value FROM {}").format(sql.Identifier(seq))).fetchone()
            out[f"sequence {seq}"] = (int(value[0]), "")
        (views,) = conn.execute("SELECT count(*) FROM pg_views WHERE viewname = 'happy_characters'").fetchone()
        out["view happy_characters"] = (views, "")
    return out
