"""Redaction of everything a diagnosis or a rollback report gathers (logs, queries, container environment):
known secret values first (longest first; values shorter than 4 characters are not searched), then the
shapes secrets take:

* URL passwords (``scheme://user:…@``);
* ``PASSWORD '…'`` (SQL) and ``password=…`` / ``password: …``;
* HTTP authorization — ``Authorization:`` / ``Proxy-Authorization:`` with any scheme (Basic, Bearer,
  Token…), and ``Bearer …`` anywhere;
* assignments to secret-looking names: ``*SECRET*=``, ``*TOKEN*=``, ``*PASSWORD*=``, ``*PASSWD*=``,
  ``*CREDENTIAL*=``, ``*_KEY=`` / ``KEY=`` / ``*_KEY_*=`` (any case);
* JSON string values under such keys (``"password": "…"``, ``"api_key": "…"``, ``"clientSecret": "…"``,
  ``"accessToken": "…"``…).

Over-masking is the accepted failure: a value that only looks like a secret is masked too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["redact", "env_values", "MASK"]

MASK = "**********"
_NAME = (r"[A-Za-z0-9_]*(?:SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)[A-Za-z0-9_]*"
         r"|(?:[A-Za-z0-9_]*_)?KEY(?:_[A-Za-z0-9_]*)?")
_JSON_NAME = r"[^\"]*(?:secret|token|password|passwd|credential|api_?key|access_?key|private_?key|authorization)[^\"]*"
_PATTERNS = [
    (re.compile(r"(\w+://[^:/@\s]*:)[^@\s]+@"), r"\1" + MASK + "@"),
    (re.compile(r"(?i)(\"" + _JSON_NAME + r"\"\s*:\s*\")(?:[^\"\\]|\\.)*\""), r"\1" + MASK + "\""),
    (re.compile(r"(?i)(password\s*(?:=|:|\s)\s*')[^']*'"), r"\1" + MASK + "'"),
    (re.compile(r"(?i)(password\s*[=:]\s*)[^\s'\"&;,]+"), r"\1" + MASK),
    (re.compile(r"(?i)(authorization\s*[:=]\s*(?:[A-Za-z-]+\s+)?)[^\s\"',;]+"), r"\1" + MASK),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + MASK),
    (re.compile(r"(?i)\b((?:" + _NAME + r")\s*=\s*)[^\s\"',;&]+"), r"\1" + MASK),
]


def env_values(env: list[str]) -> list[str]:
    """The values of a container's ``NAME=value`` environment: what its logs are masked with wherever they
    are shown (a diagnosis, a rollback report), secret-looking or not."""
    return [value for entry in env if (value := entry.partition("=")[2])]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any of ``secrets`` (longest first) and without secret-shaped values."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text
