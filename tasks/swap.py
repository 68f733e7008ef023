"""Tasks of the swap step of `restore --replace`. Each one records what it did in its transaction and
has an ``on_rollback`` hook that undoes exactly that, so a failure anywhere puts everything back."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.transactions import Transaction, get_transaction

from charhub_ops.pgurl import PgUrl
from charhub_ops.postgres import admin_session
from charhub_ops.restore import swap

__all__ = ["stop_apps", "block_live", "rename", "start_apps", "allow"]


@task(name="stop-app-containers", cache_policy=NONE)
def stop_apps(names: list[str]) -> list[str]:
    stopped = swap.stop_containers(names)
    get_transaction().set("stopped", stopped)
    get_run_logger().info("stopped: %s", ", ".join(stopped) or "nothing")
    return stopped


@stop_apps.on_rollback
def _start_again(txn: Transaction) -> None:
    swap.start_containers(txn.get("stopped", []))


@task(name="block-connections", cache_policy=NONE)
def block_live(url: PgUrl, container: str | None, database: str) -> int:
    """No new connections to ``database``; the existing ones are terminated."""
    with admin_session(url, container) as session:
        killed = swap.block_connections(session, database)
    get_transaction().set("blocked", (url, container, database))
    get_run_logger().info("%s: connections blocked, %d terminated", database, killed)
    return killed


@block_live.on_rollback
def _unblock(txn: Transaction) -> None:
    url, container, database = txn.get("blocked")
    with admin_session(url, container) as session:
        swap.allow_connections(session, database)


@task(name="rename-database", cache_policy=NONE)
def rename(url: PgUrl, container: str | None, old: str, new: str) -> None:
    with admin_session(url, container) as session:
        swap.rename_database(session, old, new)
    get_transaction().set("renamed", (url, container, old, new))
    get_run_logger().info("renamed %s → %s", old, new)


@rename.on_rollback
def _rename_back(txn: Transaction) -> None:
    url, container, old, new = txn.get("renamed")
    with admin_session(url, container) as session:
        swap.block_connections(session, new)
        swap.rename_database(session, new, old)
        swap.allow_connections(session, old)


@task(name="allow-connections", cache_policy=NONE)
def allow(url: PgUrl, container: str | None, database: str) -> None:
    with admin_session(url, container) as session:
        swap.allow_connections(session, database)


@task(name="start-app-containers", cache_policy=NONE)
def start_apps(names: list[str], timeout: float) -> None:
    """Start the containers and wait for their health checks (DockerError after ``timeout``)."""
    swap.start_containers(names)
    swap.wait_healthy(names, timeout)
