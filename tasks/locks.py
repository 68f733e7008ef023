"""Per-resource mutual exclusion across workers: a global concurrency limit ``<kind>-<name>`` of one slot —
``postgres-<db>`` per database (:func:`database_lock`), ``service-<container>`` per deployed service (deploy
pre, post and rollback), ``incident-<check id>`` per check (incident respond and resolve); all through
:func:`resource_lock`.

Backup (the dump), verify (the restore drill), migrate (the apply) and cleanup (the row deletes) of one
database hold it around their critical section, so two workers never run them on the same database at
once, while different databases proceed in parallel. The limit is created when missing (Prefect skips a
limit that does not exist unless ``strict``; here it is strict, so a lost limit fails loudly) and set back
to one slot if someone changed it. Several names are taken one by one in sorted order (two runs wanting the
same set can never hold one each and wait for the other). Entering and leaving are logged in the run
(``postgres-<db>: acquired`` / ``released``): the run's log shows how long it waited. Never nest two sections
of the same resource (one slot: a nested wait never ends) — the flows take it at task level, and a flow that
runs another (migrate's backup) does so outside its own section. Every slot is held through an outage of the
Prefect API (tasks/leases.py): the section goes on while the lease renewal waits for the API (lease: the
setting ``lock_lease_seconds``), and stops only if another run took the slot meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.exceptions import MissingContextError, ObjectAlreadyExists, ObjectNotFound

from tasks.common import setting
from tasks.leases import held_slot

__all__ = ["database_lock", "lock_name", "resource_lock"]


def lock_name(database: str, kind: str = "postgres") -> str:
    """The global concurrency limit guarding ``database`` (or another resource of ``kind``)."""
    return f"{kind}-{database}"


@contextmanager
def database_lock(database: str) -> Iterator[None]:
    """Hold the one slot of ``postgres-<database>`` (waits for it as long as it takes)."""
    with resource_lock("postgres", database):
        yield


@contextmanager
def resource_lock(kind: str, *names: str) -> Iterator[None]:
    """Hold the one slot of ``<kind>-<name>`` for every name (e.g. ``service-<container>``: deploy pre, post
    and rollback of a service), taken one by one in sorted order, each kept through an API outage."""
    limits = sorted({lock_name(n, kind) for n in names})
    log = _logger()
    lease = setting("lock_lease_seconds", 300.0)
    with ExitStack() as stack:
        for name in limits:
            _ensure_limit(name)
            stack.enter_context(held_slot(name, lease, log))
        log.info("%s: acquired", ", ".join(limits))
        try:
            yield
        finally:
            log.info("%s: released", ", ".join(limits))


def _ensure_limit(name: str) -> None:
    """Create the one-slot limit, or set it back to one slot; two workers creating it at once is fine."""
    with get_client(sync_client=True) as client:
        try:
            current = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass
            return
        if current.limit != 1 or not current.active:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=1, active=True))


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("charhub_ops.locks")
