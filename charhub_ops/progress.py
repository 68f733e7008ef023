"""Progress of long work (dump/upload, download), decoupled from how it is shown.

Core and task code call :func:`report`; the CLI subscribes a Rich progress bar (on a TTY only),
the Prefect task layer updates a progress artifact. No listener: no cost beyond a loop over [].
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Listener", "subscribe", "unsubscribe", "report"]

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
