"""Just enough SQL text handling to run and report on migration files — not a linter (squawk lints).

Statements are split on top-level semicolons, skipping comments, quoted strings, quoted identifiers
and dollar-quoted bodies, so a finding's line can be mapped to its statement and the table it names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Statement", "split_statements", "statement_at", "offset_of", "strip_comments", "named_table",
           "created_tables", "has_concurrently", "normalize_name", "Segment", "transaction_segments",
           "concurrent_index"]

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_NAME = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)(?:\s*\.\s*(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*))?'
_TABLE_PATTERNS = [
    re.compile(rf"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?({_NAME})", re.I),
    re.compile(rf"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
               rf"(?:{_NAME}\s+)?ON\s+(?:ONLY\s+)?({_NAME})", re.I),
    re.compile(rf"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?({_NAME})", re.I),
    re.compile(rf"^\s*(?:TRUNCATE|VACUUM|CLUSTER|REINDEX\s+TABLE)\s+(?:TABLE\s+)?(?:ONLY\s+)?({_NAME})", re.I),
    re.compile(rf"^\s*(?:UPDATE|DELETE\s+FROM|INSERT\s+INTO)\s+(?:ONLY\s+)?({_NAME})", re.I),
]
_CREATE_TABLE = re.compile(rf"^\s*CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(IF\s+NOT\s+EXISTS\s+)?({_NAME})", re.I)
_TX_END = re.compile(r"^\s*(COMMIT|END|ROLLBACK|ABORT)(?:\s+(?:WORK|TRANSACTION))?\s*(?:AND\s+(?:NO\s+)?CHAIN\s*)?$",
                     re.I)
_CONCURRENT_INDEX = re.compile(rf"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"
                               rf"({_NAME})\s+ON\s+(?:ONLY\s+)?({_NAME})", re.I)


@dataclass(frozen=True)
class Statement:
    start: int  # offset of the first character (comments before it included)
    end: int  # offset just after the terminating semicolon (or end of text)
    text: str  # the statement with comments removed, stripped


def _skip(text: str, i: int) -> int:
    """If a comment, string, quoted identifier or dollar quote starts at ``i``, the offset after it; else ``i``."""
    two = text[i:i + 2]
    if two == "--":
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    if two == "/*":
        depth, j = 1, i + 2
        while j < len(text) and depth:
            depth += {"/*": 1, "*/": -1}.get(text[j:j + 2], 0)
            j += 2 if text[j:j + 2] in ("/*", "*/") else 1
        return j
    if text[i] in "'\"":
        j = i + 1
        while j < len(text):
            if text[j] == text[i]:
                if text[j + 1:j + 2] == text[i]:
                    j += 2
                    continue
                return j + 1
            j += 1
        return j
    match = _DOLLAR.match(text, i) if text[i] == "$" else None
    if match and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
        end = text.find(match.group(0), match.end())
        return len(text) if end < 0 else end + len(match.group(0))
    return i


def _scan(text: str) -> tuple[list[int], str]:
    """Top-level semicolon offsets, and the text with comments blanked out (same offsets)."""
    semis, out, i = [], list(text), 0
    while i < len(text):
        j = _skip(text, i)
        if j != i:
            if text[i:i + 2] in ("--", "/*"):
                out[i:j] = [c if c == "\n" else " " for c in text[i:j]]
            i = j
            continue
        if text[i] == ";":
            semis.append(i)
        i += 1
    return semis, "".join(out)


def split_statements(text: str) -> list[Statement]:
    """The non-empty statements of ``text``, in order, with their offsets."""
    semis, clean = _scan(text)
    result, start = [], 0
    for end in [*[s + 1 for s in semis], len(text)]:
        body = clean[start:end].rstrip(";").strip()
        if body:
            result.append(Statement(start, end, body))
        start = end
    return result


def strip_comments(text: str) -> str:
    return _scan(text)[1]


def offset_of(text: str, line: int, column: int) -> int:
    """Offset of a 0-based (line, column) position."""
    lines = text.splitlines(keepends=True)
    return sum(len(x) for x in lines[:line]) + column


def statement_at(statements: list[Statement], offset: int) -> Statement | None:
    for st in statements:
        if st.start <= offset < st.end:
            return st
    return statements[-1] if statements else None


def normalize_name(name: str) -> str:
    """``public."UsageLog"`` → ``public.UsageLog``; unquoted parts fold to lower case, as PostgreSQL does."""
    parts = re.findall(r'"((?:[^"]|"")+)"|([^."\s]+)', name)
    return ".".join(q.replace('""', '"') if q else u.lower() for q, u in parts)


def named_table(statement: str) -> str | None:
    """The table a statement alters, indexes or drops (normalized), or None."""
    for pattern in _TABLE_PATTERNS:
        match = pattern.match(statement)
        if match:
            return normalize_name(match.group(1))
    return None


def created_tables(text: str, if_not_exists: bool = False) -> set[str]:
    """Tables created by the statements of ``text`` (normalized names, with and without a schema): by a plain
    ``CREATE TABLE``, or with ``if_not_exists`` by ``CREATE TABLE IF NOT EXISTS`` (new only if it is missing)."""
    names: set[str] = set()
    for st in split_statements(text):
        match = _CREATE_TABLE.match(st.text)
        if match and bool(match.group(1)) == if_not_exists:
            name = normalize_name(match.group(2))
            names |= {name, name.rsplit(".", 1)[-1]}
    return names


def has_concurrently(text: str) -> bool:
    return re.search(r"\bCONCURRENTLY\b", strip_comments(text), re.I) is not None


@dataclass(frozen=True)
class Segment:
    """A run of statements ending with a top-level COMMIT/END/ROLLBACK/ABORT, or the rest of the file."""

    text: str  # the file's text of these statements, comments included
    first_line: int  # 1-based line of the first statement
    last_line: int  # 1-based line of the end of the last statement
    commits: bool  # it ends with COMMIT / END (not ROLLBACK / ABORT)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def transaction_segments(text: str) -> list[Segment]:
    """``text`` cut after each top-level COMMIT / END / ROLLBACK. Running the segments one after the other as
    separate simple queries does what one simple query of the whole file does (a transaction-control statement
    ends the current transaction either way), and tells how far the file got."""
    segments, start, clean = [], None, strip_comments(text)
    statements = split_statements(text)
    for st in statements:
        start = st.start if start is None else start
        if _TX_END.match(st.text) or st is statements[-1]:
            first = start + len(clean[start:st.end]) - len(clean[start:st.end].lstrip())
            end = _TX_END.match(st.text)
            segments.append(Segment(text[start:st.end], _line(text, first), _line(text, st.end - 1),
                                    bool(end) and end.group(1).upper() in ("COMMIT", "END")))
            start = None
    return segments


def concurrent_index(statement: str) -> tuple[str, str] | None:
    """(index, table) of a ``CREATE [UNIQUE] INDEX CONCURRENTLY name ON table``, normalized; else None."""
    match = _CONCURRENT_INDEX.match(strip_comments(statement).strip())
    return (normalize_name(match.group(1)), normalize_name(match.group(2))) if match else None
