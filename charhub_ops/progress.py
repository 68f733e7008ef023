"""Progress of long work (dump/upload, download), decoupled from how it is shown.

Core and task code call :func:`report`; the CLI subscribes a Rich progress bar (on a TTY only),
the Prefect task layer updates a progress artifact. No listener: no cost beyond a loop over [].

Units: the bytes advanced and the expected total of one name are always the same kind of bytes.
A backup reports the raw ``pg_dump`` output (before compression) against :func:`expected_total`,
an estimate of that raw size; a download reports stored bytes against the stored size.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["Listener", "subscribe", "unsubscribe", "report", "expected_total", "ProgressReader"]

# (name, bytes advanced, expected total or None)
Listener = Callable[[str, int, int | None], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> None:
    with _lock:
        _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def report(name: str, advanced: int, total: int | None = None) -> None:
    for listener in list(_listeners):
        listener(name, advanced, total)


def expected_total(previous_raw_size: int | None, database_size: int | None) -> int | None:
    """The expected raw dump size of a backup: the previous backup's raw size if there is one (the
    best estimate: same data, same tool), else the database's on-disk size (an over-estimate: it
    counts indexes and free space), else None (unknown)."""
    return previous_raw_size or database_size or None


class ProgressReader:
    """Passes reads through from ``raw`` and tells ``progress`` how many bytes each one returned."""

    def __init__(self, raw: BinaryIO, progress: Callable[[int], None]) -> None:
        self._raw, self._progress = raw, progress

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._progress(len(data))
        return data
