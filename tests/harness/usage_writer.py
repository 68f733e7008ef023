"""The application's side of a cleanup: a thread that inserts a new ``UsageLog`` row and updates an existing
(expired) one, again and again, timing each pair — its worst time is the longest the cleanup made the app wait.
Used by the row-cleanup tests and by bench/cleanup_bench.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg

__all__ = ["UsageWriter"]


class UsageWriter(threading.Thread):
    """``expired_id(i)``: the id of the row the ``i``-th pair updates; ``pause``: seconds between pairs.
    ``waits``: each pair's duration; ``errors``: what stopped it (the caller asserts there is none)."""

    def __init__(self, url: str, expired_id: Callable[[int], str], pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.url, self.expired_id, self.pause = url, expired_id, pause
        self.stop, self.waits, self.errors = threading.Event(), [], []

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                i = 0
                while not self.stop.is_set():
                    i += 1
                    started = time.perf_counter()
                    conn.execute("""INSERT INTO "UsageLog" (id, "timestamp", processed) VALUES (%s, now(), true)""",
                                 [f"w{i}"])
                    conn.execute("""UPDATE "UsageLog" SET tokens = tokens + 1 WHERE id = %s""", [self.expired_id(i)])
                    self.waits.append(time.perf_counter() - started)
                    time.sleep(self.pause)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.errors.append(exc)
