"""Which media keys the database references: a pure matcher over column values, and the batched lookup.

:func:`references_in` answers "which of these keys does this value reference" for any value psycopg
returns: text, the elements of an array (``String[]``), every string and object key of a JSON document
(``Json``), at any depth. In each string, every occurrence of a prefix (``prod/``) is a possible key
(all of them, not the first), in the string as it is, percent-decoded (``%20``, ``%2F``; up to three
times for double encoding) and with JSON-escaped slashes (``\\/``) undone. A key occurrence must start
at the beginning of the string or after a character that is not a letter or digit, and end at the end
of the string or before a character other than letters, digits, ``. _ ~ - /``: so a query string, a
fragment and trailing punctuation (``"`` ``)`` ``,`` ``}`` ``]``, whitespace) end a key, and yet a key
that itself contains a space, a comma, a ``?`` or a parenthesis is still found (every such end is tried
against the listed keys, up to 1,024 characters). The matcher errs on one side on purpose: a
missed reference deletes live media, an extra one only keeps an orphan one more run.

:func:`referenced_keys` streams the rows of each ``Table.column`` through a server-side cursor (never a
whole table in memory): one pass per column whatever the number of keys, so the plan (all listed keys)
and the re-check of a batch cost the same. PostgreSQL only narrows, with ``col::text LIKE '%prod%'`` (the
prefix's longest run of URL-unreserved characters ``[A-Za-z0-9._~-]``: never percent-encoded, never
escaped in array or JSON text); the matcher decides, following a key occurrence only as far as the
longest wanted key. Narrowing by each key's own text was tried and dropped: ``LIKE ANY`` over 100 keys
(or a 100-way regular expression) cost PostgreSQL more than the whole Python match (bench/README.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Set
from urllib.parse import unquote

import psycopg
from psycopg import sql
from pydantic import BaseModel

from charhub_ops.errors import ConfigError
from charhub_ops.pgerrors import db_errors

__all__ = ["MediaReference", "parse_references", "references_in", "referenced_keys", "KEY_MAX"]

KEY_MAX = 1024  # S3/R2 keys are at most 1,024 bytes: no key occurrence runs further
FETCH_ROWS = 2000  # rows per round trip of the server-side cursor
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")
_KEY_END = re.compile(r"[^A-Za-z0-9._~/-]")  # a key ends before any other character


class MediaReference(BaseModel):
    schema_name: str = "public"
    table: str
    column: str

    def __str__(self) -> str:
        return f"{self.table}.{self.column}"


def parse_references(items: list[str]) -> list[MediaReference]:
    """``Table.column`` or ``schema.Table.column`` items (setting cleanup_media_references)."""
    refs = []
    for item in items:
        parts = item.split(".")
        if len(parts) not in (2, 3) or not all(parts):
            raise ConfigError(f"cleanup_media_references: {item!r} is not Table.column or schema.Table.column")
        refs.append(MediaReference(schema_name=parts[0], table=parts[1], column=parts[2]) if len(parts) == 3
                    else MediaReference(table=parts[0], column=parts[1]))
    if not refs:
        raise ConfigError("cleanup_media_references: not set; without references every media object would look "
                          "orphaned (list the Table.column pairs that hold media keys or URLs)")
    return refs


def _strings(value: object) -> Iterator[str]:
    """Every string inside a column value: text, array elements, JSON strings and object keys (any depth)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, bytes | bytearray | memoryview):
        yield bytes(value).decode("utf-8", "replace")
    elif value is not None and not isinstance(value, bool | int | float):
        yield str(value)


def _forms(text: str) -> set[str]:
    """The string as it is, percent-decoded (repeatedly, for double encoding) and with ``\\/`` undone."""
    forms = {text}
    if "\\/" in text:
        forms.add(text.replace("\\/", "/"))
    decoded = text
    for _ in range(3):
        if "%" not in decoded or (step := unquote(decoded)) == decoded:
            break
        decoded = step
        forms.add(decoded)
    return forms


def _starts(prefixes: list[str]) -> re.Pattern[str]:
    return re.compile(f"(?<![A-Za-z0-9])(?:{'|'.join(re.escape(p) for p in prefixes)})")


def _matches(text: str, keys: Set[str], starts: re.Pattern[str], longest: int) -> Iterator[str]:
    for start in starts.finditer(text):
        run = text[start.start():start.start() + longest + 1]  # one more: what follows the longest key
        ends = [m.start() for m in _KEY_END.finditer(run, len(start.group()))]
        ends += [len(run)] if len(run) <= longest else []  # the run reached the end of the text
        yield from (run[:end] for end in ends if run[:end] in keys)


def _found(value: object, keys: Set[str], starts: re.Pattern[str], longest: int) -> set[str]:
    return {key for text in _strings(value) for form in _forms(text)
            for key in _matches(form, keys, starts, longest)}


def _longest(keys: Set[str]) -> int:
    """No key occurrence runs further than the longest wanted key (nor than an S3 key can be)."""
    return min(KEY_MAX, max(map(len, keys), default=0))


def references_in(value: object, keys: Set[str], prefixes: list[str]) -> set[str]:
    """Which of ``keys`` ``value`` references (see the module docstring for what counts). Pure."""
    return _found(value, keys, _starts(prefixes), _longest(keys))


def _narrowing(prefixes: list[str]) -> list[str] | None:
    """LIKE patterns every textual form of a value referencing a key under ``prefixes`` matches one of: each
    prefix's longest run of URL-unreserved characters (``prod``); None when a prefix has none."""
    runs = {max(_UNRESERVED.findall(p), key=len, default="") for p in prefixes}
    if "" in runs:
        return None
    return sorted("%" + r.replace("_", "\\_") + "%" for r in runs)


def _values(conn: psycopg.Connection, ref: MediaReference, narrow: list[str] | None) -> Iterator[object]:
    """The column's non-null values (narrowed by the LIKE patterns ``narrow``), streamed in one transaction."""
    where = sql.SQL(" AND {col}::text LIKE ANY(%(narrow)s)") if narrow else sql.SQL("")
    statement = sql.SQL("SELECT {col} FROM {s}.{t} WHERE {col} IS NOT NULL{where}").format(
        col=sql.Identifier(ref.column), s=sql.Identifier(ref.schema_name), t=sql.Identifier(ref.table),
        where=where.format(col=sql.Identifier(ref.column)))
    with conn.transaction(), conn.cursor(name="charhub_ops_media_refs") as cursor:
        cursor.itersize = FETCH_ROWS
        cursor.execute(statement, {"narrow": narrow})
        for (value,) in cursor:
            yield value


def referenced_keys(conn: psycopg.Connection, refs: list[MediaReference], keys: list[str],
                    prefixes: list[str]) -> set[str]:
    """Which of ``keys`` (all under ``prefixes``) some row of ``refs`` references; one streamed scan per column."""
    wanted, found = set(keys), set()
    if not wanted:
        return found
    narrow, starts, longest = _narrowing(prefixes), _starts(prefixes), _longest(wanted)
    for ref in refs:
        with db_errors(f"look up media references in {ref}"):
            for value in _values(conn, ref, narrow):
                found |= _found(value, wanted, starts, longest)
    return found
