"""After a migration: the configured health URLs must answer 2xx within a timeout (polled).

Kept simple on purpose; the monitoring pipeline will bring richer checks that can be reused here.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["HealthResult", "check_url", "check_urls"]


@dataclass(frozen=True)
class HealthResult:
    url: str
    ok: bool
    status: int | None
    detail: str
    seconds: float


def _probe(url: str, timeout: float) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, "ok"
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"{type(reason).__name__}: {reason}"


def check_url(url: str, timeout: float, poll: float = 1.0,
              sleep: Callable[[float], None] = time.sleep) -> HealthResult:
    """Poll ``url`` until it answers 2xx or ``timeout`` seconds have passed."""
    started = time.monotonic()
    while True:
        remaining = timeout - (time.monotonic() - started)
        status, detail = _probe(url, max(min(remaining, 10.0), 0.5))
        elapsed = round(time.monotonic() - started, 3)
        if status is not None and 200 <= status < 300:
            return HealthResult(url, True, status, detail, elapsed)
        if time.monotonic() - started + poll > timeout:
            return HealthResult(url, False, status, detail, elapsed)
        sleep(poll)


def check_urls(urls: list[str], timeout: float, poll: float = 1.0) -> list[HealthResult]:
    return [check_url(url, timeout, poll) for url in urls]
