"""Redaction of everything a diagnosis gathers (logs, queries, container environment): known secret values
first, then the shapes secrets take (URL passwords, ``password=…``, ``PASSWORD '…'``, Bearer tokens,
``*_SECRET=`` / ``*_TOKEN=`` / ``*_KEY=`` assignments)."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["redact", "MASK"]

MASK = "**********"
_PATTERNS = [
    (re.compile(r"(\w+://[^:/@\s]*:)[^@\s]+@"), r"\1" + MASK + "@"),
    (re.compile(r"(?i)(password\s*(?:=|:|\s)\s*')[^']*'"), r"\1" + MASK + "'"),
    (re.compile(r"(?i)(password\s*[=:]\s*)[^\s'\"&;,]+"), r"\1" + MASK),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + MASK),
    (re.compile(r"(?i)\b([A-Z0-9_]*(?:SECRET|TOKEN|PASSWORD|PASSWD|API_KEY|ACCESS_KEY)[A-Z0-9_]*\s*=\s*)\S+"),
     r"\1" + MASK),
]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any of ``secrets`` (longest first) and without secret-shaped values."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text
