"""Taking a free ``postgres-<db>`` slot costs no retry sleep (issue 18, item 6).

On a SQLite-backed Prefect server the slot's increment reads the limit, then writes it, in one deferred
transaction: when another writer (the server recording the run's task states, logs, events) commits in
between, SQLite answers "database is locked" and the API answers 503. Prefect's client then sleeps 2 s (its
exponential backoff, 2**1 s plus jitter) before asking again — seen as ``previous-backup`` finished
18:06:05.551, ``postgres-<db>: acquired`` 18:06:07.929. Here the test holds a write transaction on the
server's own database file while the slot is taken, so the increment meets exactly that 503, and records the
retry pauses Prefect's client computes (``prefect.client.base``'s jitter functions, called once per retry
with the pause to take). The assertion is on the mechanism: a 503 was answered, and no retry pause of a
second or more was asked for — never on wall time.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

INCREMENT = "/v2/concurrency_limits/increment-with-lease"


@pytest.fixture
def one_slot(prefect_server) -> str:
    """A new ``postgres-<db>``-like limit, made as the locks make theirs (one slot)."""
    import uuid

    from tasks.locks import _ensure_limit

    name = "acquire-" + uuid.uuid4().hex[:8]
    _ensure_limit(name)
    return name


def _active(client, name: str) -> int:
    return client.read_global_concurrency_limit_by_name(name).active_slots


@pytest.fixture
def pauses(monkeypatch) -> list[float]:
    """The retry pauses Prefect's client takes (seconds asked for, before jitter), from every client."""
    import prefect.client.base as base

    asked: list[float] = []
    for name in ("bounded_poisson_interval", "clamped_poisson_interval"):
        real = getattr(base, name)

        def record(seconds, *args, _real=real):
            asked.append(float(seconds))
            return _real(seconds, *args)

        monkeypatch.setattr(base, name, record)
    return asked


@pytest.fixture
def increments(monkeypatch) -> list[int]:
    """The status of every increment-with-lease response the server sent (sync and async clients)."""
    seen: list[int] = []
    real_sync, real_async = httpx.Client.send, httpx.AsyncClient.send

    def sync_send(self, request, *args, **kwargs):
        response = real_sync(self, request, *args, **kwargs)
        if request.url.path.endswith(INCREMENT):
            seen.append(response.status_code)
        return response

    async def async_send(self, request, *args, **kwargs):
        response = await real_async(self, request, *args, **kwargs)
        if request.url.path.endswith(INCREMENT):
            seen.append(response.status_code)
        return response

    monkeypatch.setattr(httpx.Client, "send", sync_send)
    monkeypatch.setattr(httpx.AsyncClient, "send", async_send)
    return seen


def _server_database() -> Path:
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    assert url.startswith("sqlite"), f"this drill needs the SQLite-backed test server, not {url}"
    return Path(url.split(":///", 1)[1])


def _commit_after_503(writer: sqlite3.Connection, increments: list[int], done: threading.Event) -> None:
    """Commit once the server has answered 503 (or after 10 s: its UPDATE may wait for this commit and fail
    only then, its snapshot being stale)."""
    for _ in range(200):
        if 503 in increments or done.is_set():
            break
        done.wait(0.05)
    writer.commit()


def test_a_free_slot_is_taken_without_the_clients_backoff_when_sqlite_is_busy(one_slot, pauses, increments):
    from prefect.client.orchestration import get_client

    from tasks.leases import held_slot

    writer = sqlite3.connect(_server_database(), isolation_level=None, timeout=30, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # another writer in the middle of its transaction, as the server's own are
    writer.execute("UPDATE concurrency_limit_v2 SET updated = updated WHERE name = ?", (one_slot,))
    answered = threading.Event()
    committer = threading.Thread(target=_commit_after_503, args=(writer, increments, answered))
    committer.start()
    try:
        with held_slot(one_slot, 60, logging.getLogger("test")):
            with get_client(sync_client=True) as client:
                assert _active(client, one_slot) == 1
    finally:
        answered.set()
        committer.join()
        writer.close()
    with get_client(sync_client=True) as client:
        assert _active(client, one_slot) == 0
    assert 503 in increments and increments[-1] == 200, increments  # the busy database was met, then the slot
    assert pauses and max(pauses) < 1.0, f"retry pauses asked for: {pauses}"  # not the client's 2 s backoff


@pytest.mark.parametrize(("statuses", "retry_after"), [
    ([503], ["0.05"]),
    ([503, 503, 503, 503, 503, 503], ["0.05", "0.1", "0.2", "0.4", "0.8", None]),  # then the client's backoff
    ([503, 200, 503], ["0.05", None, "0.05"]),  # a success starts the count again
    ([423, 503], ["7.5", "0.05"]),  # a held slot keeps the server's own Retry-After (7.5 here)
])
def test_busy_answers_get_short_pauses_then_the_clients_backoff(statuses, retry_after):
    from tasks.leases import _BusyPause

    hook = _BusyPause()
    seen = []
    for status in statuses:
        response = httpx.Response(status, headers={"Retry-After": "7.5"} if status == 423 else {})
        hook(response)
        seen.append(response.headers.get("Retry-After"))
    assert seen == retry_after


def test_a_short_section_loads_no_ca_bundle_for_an_http_api(one_slot, monkeypatch):
    """Prefect builds a verified TLS context for every new client (certifi's CA bundle: 60–130 ms of CPU);
    the slot's own clients (acquire, renewal thread, release) need none for an http:// API, and a section
    shorter than a quarter lease renews nothing, so it opens no renewal client at all."""
    import ssl

    from prefect.settings import PREFECT_API_URL

    from tasks.leases import held_slot

    assert PREFECT_API_URL.value().startswith("http://")
    loaded: list[str] = []
    real = ssl.SSLContext.load_verify_locations

    def record(self, *args, **kwargs):
        loaded.append(threading.current_thread().name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", record)
    with held_slot(one_slot, 60, logging.getLogger("test")):
        pass
    assert loaded == []
