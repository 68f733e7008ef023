"""Swapping a restored copy into the live database name, and the application containers around it.

Every step here has an exact inverse, so a failed swap can be undone step by step (the flow runs them
in a Prefect transaction whose rollback hooks call the inverses). No database is ever dropped.
"""

from __future__ import annotations

import time

import docker
from psycopg import sql

from charhub_ops.errors import DatabaseError, DockerError
from charhub_ops.postgres import SqlSession

__all__ = ["block_connections", "allow_connections", "rename_database", "stop_containers", "start_containers",
           "wait_healthy", "pre_restore_name"]


def pre_restore_name(live: str, stamp: str) -> str:
    return f"{live}_pre_restore_{stamp}"[:63]


def block_connections(session: SqlSession, database: str) -> int:
    """Refuse new connections to ``database`` and terminate the existing ones; returns how many."""
    ident, lit = sql.Identifier(database), sql.Literal(database)
    session.query(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident).as_string(None))
    rows = session.query(sql.SQL("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE datname = {} AND pid <> pg_backend_pid()").format(lit).as_string(None))
    return int(rows[0][0]) if rows else 0


def allow_connections(session: SqlSession, database: str) -> None:
    session.query(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true")
                  .format(sql.Identifier(database)).as_string(None))


def rename_database(session: SqlSession, old: str, new: str) -> None:
    """ALTER DATABASE old RENAME TO new (fails while anyone is connected to ``old``)."""
    try:
        session.query(sql.SQL("ALTER DATABASE {} RENAME TO {}")
                      .format(sql.Identifier(old), sql.Identifier(new)).as_string(None))
    except DatabaseError as exc:
        raise DatabaseError(f"rename {old} → {new}: {exc}") from exc


def _client() -> docker.DockerClient:
    try:
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise DockerError(f"docker: cannot reach the Docker engine: {exc}") from exc


def _get(client, name: str):
    try:
        return client.containers.get(name)
    except docker.errors.NotFound as exc:
        raise DockerError(f"docker: container '{name}' not found (setting app_containers)") from exc
    except docker.errors.APIError as exc:
        raise DockerError(f"docker: {name}: {exc.explanation or exc}") from exc


def stop_containers(names: list[str], timeout: int = 30) -> list[str]:
    """Stop the running ones among ``names``; returns those stopped (to start them again later)."""
    client, stopped = _client(), []
    for name in names:
        container = _get(client, name)
        if container.status == "running":
            try:
                container.stop(timeout=timeout)
            except docker.errors.APIError as exc:
                raise DockerError(f"docker: stop {name}: {exc.explanation or exc}") from exc
            stopped.append(name)
    return stopped


def start_containers(names: list[str]) -> None:
    client = _client()
    for name in names:
        try:
            _get(client, name).start()
        except docker.errors.APIError as exc:
            raise DockerError(f"docker: start {name}: {exc.explanation or exc}") from exc


def wait_healthy(names: list[str], timeout: float = 120) -> None:
    """Wait until each container is running and, if it has a health check, healthy; DockerError on timeout."""
    client, deadline = _client(), time.monotonic() + timeout
    pending = list(names)
    while pending:
        for name in list(pending):
            state = _get(client, name).attrs.get("State", {})
            health = (state.get("Health") or {}).get("Status")
            if state.get("Running") and health in (None, "healthy"):
                pending.remove(name)
        if pending and time.monotonic() > deadline:
            raise DockerError(f"docker: not healthy after {timeout:.0f} s: {', '.join(pending)}")
        if pending:
            time.sleep(0.5)
