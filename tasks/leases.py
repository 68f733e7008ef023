"""One slot of a Prefect global concurrency limit, held through an outage of the Prefect API.

Prefect's ``concurrency()`` renews its lease from a thread every ¾ of the lease and, when three attempts
fail (strict), cancels the section: a server restart or a network cut at the wrong moment aborts a backup
in mid-dump; non-strict, it stops renewing, the lease expires and a second run can enter. :func:`held_slot`
takes the slot the same way (waiting as long as it takes; the server's Retry-After while another run holds it)
except that a 503 from a SQLite-backed server ("database is locked", a write conflict of milliseconds) is
retried after 50 ms, not after the client's 2 s backoff (:func:`_acquire`); and it keeps the slot differently:

- renewal every ¼ lease (``lock_lease_seconds``, default 300 s), so an outage shorter than ¾ lease never
  lets it expire; while the API is unreachable (connection refused, timeouts, 5xx) the section goes on and
  the renewal is retried every few seconds, logged once when the outage starts and once when it ends;
- when the API answers that the lease is gone although it cannot have expired yet, the server forgot it (a
  restart with the default in-memory lease storage) while its slot stays counted in the database — nobody else
  can have entered: the slot is kept without a lease and given back with a plain decrement at the end;
- when the lease is gone after it could have expired (an outage longer than ¾ lease), its slot is given back if
  still counted and taken again at once if free; if another run holds it now the section is stopped
  (:class:`LockLostError`, transient: the task's retry waits for the slot), so two runs never overlap;
- release retries through an outage for up to RELEASE_RETRY_SECONDS (30 s; a leaseless slot up to one lease): a
  lease it cannot release expires by itself.

Prefect's own ``concurrency()`` never frees a slot whose lease a restart forgot: the lease-based release is a
no-op for an unknown lease, and the slot stays taken until someone resets the limit. Persistent lease storage
on the server (``PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage.filesystem``)
avoids that for every other user of global limits (docs/deployments.md, "Scale-out").
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from uuid import UUID

import httpx
from prefect._internal.concurrency.cancellation import CancelledError, WatcherThreadCancelScope
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
from prefect.concurrency._events import emit_concurrency_acquisition_events, emit_concurrency_release_events
from prefect.settings import PREFECT_API_URL

from charhub_ops.errors import OpsError

__all__ = ["LockLostError", "held_slot"]

RETRY_SECONDS = 3.0  # between renewal attempts while the API is unreachable
RELEASE_RETRY_SECONDS = 30.0  # release retries of a leased slot while the API is unreachable
MARGIN_SECONDS = 5.0  # a lease is taken as possibly expired this long before its end (clocks, latency)
BUSY_PAUSES = (0.05, 0.1, 0.2, 0.4, 0.8)  # before the first retries of an acquisition the API answered 503
_GONE = (404, 410)


class LockLostError(OpsError):
    """The slot's lease expired during an API outage and another run holds the slot now."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


@contextmanager
def held_slot(name: str, lease_seconds: float, log: logging.Logger | logging.LoggerAdapter) -> Iterator[_Keeper]:
    """Hold one slot of the limit ``name`` (it must exist) for the block; see the module docstring. Yields the
    lease's keeper (its ``lease_id``, whether it is ``leaseless``)."""
    response = _acquire(name, lease_seconds)
    keeper = _Keeper(name, response.lease_id, lease_seconds, log)
    events = emit_concurrency_acquisition_events(response.limits, 1)  # as Prefect's concurrency() does
    try:
        with WatcherThreadCancelScope() as scope:
            keeper.start(scope)
            try:
                yield keeper
            finally:
                keeper.stop()
    except CancelledError as exc:
        if keeper.lost is None:
            raise
        raise LockLostError(keeper.lost) from exc
    finally:
        keeper.release()
        emit_concurrency_release_events(response.limits, 1, events)


def _acquire(name: str, lease_seconds: float) -> ConcurrencyLimitWithLeaseResponse:
    """Take one slot of ``name`` with a lease, waiting as long as it takes, as Prefect's ``concurrency()`` does
    (423, the slot is held: again after the server's Retry-After; the limit must exist) with one difference:
    a 503 is retried after BUSY_PAUSES instead of the client's 2 s, 4 s … backoff.

    A SQLite-backed server answers 503 ("database is locked") when another writer — typically the server
    itself recording the run's task states — commits between the increment's read and its write of the limit:
    a conflict of milliseconds that cost every such run ~2 s. A response hook gives those 503s a short
    ``Retry-After``, which Prefect's client honours; once BUSY_PAUSES are used up, a second round of the
    client's retries keeps its own backoff, so a server that stays busy is waited for at least as long as
    before. Other errors (the API unreachable, 5xx) are the client's as before: retried, then raised."""
    rounds = 0
    with _client(event_hooks={"response": [_BusyPause()]}) as client:
        while True:
            try:
                response = client.increment_concurrency_slots_with_lease(
                    names=[name], slots=1, mode="concurrency", lease_duration=lease_seconds)
            except httpx.HTTPStatusError as exc:
                status = exc.response.status_code
                if status == 423:
                    time.sleep(float(exc.response.headers["Retry-After"]))
                    continue
                rounds += 1
                if status == 503 and rounds == 1:
                    continue
                raise
            result = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
            if not result.limits:
                raise OpsError(f"{name}: the concurrency limit does not exist (deleted while it was being taken?)")
            return result


def _client(**httpx_settings) -> SyncPrefectClient:
    """A new sync Prefect client for this module's threads (not the run's: other settings, other thread). For
    an http:// API it gets a bare TLS context: Prefect would build one per client by loading the CA bundle
    (60–130 ms of CPU each, on the path of every locked section) that plain HTTP never uses; if it were
    redirected to https, verification fails (no CA trusted) rather than being skipped. https: Prefect's own."""
    if str(PREFECT_API_URL.value() or "").startswith("http://"):
        httpx_settings["verify"] = _bare_tls_context()
    return get_client(sync_client=True, httpx_settings=httpx_settings)


@functools.cache
def _bare_tls_context() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names; trusts none


class _BusyPause:
    """httpx response hook of :func:`_acquire`: the n-th 503 in a row gets ``Retry-After: BUSY_PAUSES[n]``."""

    def __init__(self) -> None:
        self.in_a_row = 0

    def __call__(self, response: httpx.Response) -> None:
        if response.status_code != 503:
            self.in_a_row = 0
            return
        if self.in_a_row < len(BUSY_PAUSES) and "Retry-After" not in response.headers:
            response.headers["Retry-After"] = str(BUSY_PAUSES[self.in_a_row])
        self.in_a_row += 1


class _Keeper:
    """The renewal thread of one lease."""

    def __init__(self, name: str, lease_id: UUID, lease_seconds: float, log) -> None:
        self.name, self.lease_id, self.lease_seconds, self.log = name, lease_id, lease_seconds, log
        self.lost: str | None = None
        self.down_since: float | None = None
        self.leaseless = False  # the server forgot the lease; the slot is still counted as ours
        self.taken = self.valid_until = time.monotonic()
        self.valid_until += lease_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, scope: WatcherThreadCancelScope) -> None:
        self._thread = threading.Thread(target=self._run, args=(scope,), daemon=True, name=f"lease-{self.name}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, scope: WatcherThreadCancelScope) -> None:
        """Renew until stopped; the client is opened at the first renewal (most sections end before it)."""
        with ExitStack() as stack:
            client = None
            while not self.leaseless and not self._stop.wait(
                    RETRY_SECONDS if self.down_since else self.lease_seconds / 4):
                client = client or stack.enter_context(_client())
                self._renew(client)
                if self.lost is not None and not self._stop.is_set():
                    self.log.error("%s", self.lost)
                    scope.cancel()
                    return

    def _renew(self, client) -> None:
        started = time.monotonic()
        try:
            client.renew_concurrency_lease(lease_id=self.lease_id, lease_duration=self.lease_seconds)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in _GONE and started < self.valid_until - MARGIN_SECONDS:
                self.leaseless = True
                self._back("the server forgot the lease before it could expire (restarted without persistent "
                           "lease storage); the slot is still counted as ours and is kept without a lease")
            elif exc.response.status_code in _GONE:
                self._reacquire(client)
            else:
                self._unreachable(exc)
            return
        except httpx.TransportError as exc:
            self._unreachable(exc)
            return
        self.valid_until = started + self.lease_seconds
        self._back("lease renewed")

    def _reacquire(self, client) -> None:
        """The lease expired: give back its slot if the server still counts it (not yet repossessed; a no-op
        otherwise), then take the slot again if nobody else holds it (never once the section has ended)."""
        if self._stop.is_set():
            return
        try:
            client.release_concurrency_slots_with_lease(lease_id=self.lease_id)
            response = client.increment_concurrency_slots_with_lease(
                names=[self.name], slots=1, mode="concurrency", lease_duration=self.lease_seconds)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:
                self._unreachable(exc)
                return
            self.lost = (f"{self.name}: lock lost during a Prefect API outage (its lease expired or the server "
                         "forgot it) and another run holds it now; stopping this section")
            return
        except httpx.TransportError as exc:
            self._unreachable(exc)
            return
        self.lease_id = UUID(response.json()["lease_id"])
        self.valid_until = time.monotonic() + self.lease_seconds
        self._back("lease expired during the outage; the slot was free and is held again")

    def _unreachable(self, exc: Exception) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.log.warning("%s: Prefect API unreachable (%s); still holding the lock and working, renewal "
                             "retried every %.0f s", self.name, _brief(exc), RETRY_SECONDS)

    def _back(self, what: str) -> None:
        if self.down_since is not None:
            self.log.warning("%s: Prefect API back after %.0f s; %s", self.name,
                             time.monotonic() - self.down_since, what)
            self.down_since = None
        elif self.leaseless:
            self.log.warning("%s: %s", self.name, what)

    def release(self) -> None:
        """Give the slot back, retrying through an outage: a leaseless slot for up to one lease (nothing else
        frees it), a leased one for up to RELEASE_RETRY_SECONDS (its lease frees it anyway; a run whose server
        is gone for good ends instead of waiting a whole lease)."""
        patience = self.lease_seconds if self.leaseless else min(self.lease_seconds, RELEASE_RETRY_SECONDS)
        deadline = time.monotonic() + patience
        with _client() as client:
            while True:
                try:
                    if self.leaseless:
                        client.release_concurrency_slots([self.name], 1, time.monotonic() - self.taken)
                    else:
                        client.release_concurrency_slots_with_lease(lease_id=self.lease_id)
                    return
                except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                    permanent = isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500
                    if permanent or time.monotonic() > deadline:
                        after = ("stays counted: reset it in the UI's Concurrency page" if self.leaseless
                                 else f"is freed when its lease expires (within {self.lease_seconds:.0f} s)")
                        self.log.warning("%s: could not release the lock (%s); the slot %s", self.name,
                                         _brief(exc), after)
                        return
                    time.sleep(RETRY_SECONDS)


def _brief(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__
