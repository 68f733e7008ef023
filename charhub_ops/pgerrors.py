"""Which PostgreSQL failures are worth retrying (pure functions, no I/O).

A failure is transient when the same step may succeed when simply run again: the server terminated
or restarted the session, a serialization failure or deadlock, a lock timeout, a refused or timed-out
connection. Everything else (authentication, a missing database, a syntax error, permissions) is
permanent. Two sources: an SQLSTATE (psycopg, psql's ``:SQLSTATE``) and the stderr text of a client
tool (pg_dump, pg_restore, psql only print libpq's messages).
"""

from __future__ import annotations

import psycopg

from charhub_ops.errors import DatabaseError

__all__ = ["TRANSIENT_SQLSTATES", "sqlstate_is_transient", "stderr_is_transient", "psycopg_is_transient",
           "tool_failure"]

_MESSAGE_TAIL = 500

TRANSIENT_SQLSTATES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (lock_timeout)
    "57P01",  # admin_shutdown: pg_terminate_backend, fast shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: starting up, shutting down, recovery
    "53300",  # too_many_connections
})

# libpq / server messages (lower case) that mean "the connection went away", not "the request is wrong".
_TRANSIENT_TEXT = (
    "terminating connection due to administrator command",
    "terminating connection because of crash of another server process",
    "server closed the connection unexpectedly",
    "connection to server was lost",
    "could not connect",
    "connection refused",
    "connection reset by peer",
    "timeout expired",
    "could not receive data from server",
    "could not send data to server",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "temporary failure in name resolution",
    "sorry, too many clients already",
    "could not serialize access",
    "deadlock detected",
    "canceling statement due to lock timeout",
    "could not obtain lock",
)


def sqlstate_is_transient(sqlstate: str | None) -> bool:
    """True for the SQLSTATEs above and every connection exception (class 08)."""
    return bool(sqlstate) and (sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith("08"))


def stderr_is_transient(stderr: str) -> bool:
    """True when a client tool's stderr shows the connection was lost or refused (retry may succeed)."""
    text = stderr.lower()
    return any(pattern in text for pattern in _TRANSIENT_TEXT)


def psycopg_is_transient(exc: psycopg.Error) -> bool:
    """A psycopg error: by its SQLSTATE; without one (the connection failed or broke), by its message."""
    if exc.sqlstate:
        return sqlstate_is_transient(exc.sqlstate)
    return isinstance(exc, psycopg.OperationalError) and stderr_is_transient(str(exc))


def tool_failure(program: str, code: int, stderr: bytes | str) -> DatabaseError:
    """``<program>: exit <code>: <stderr tail>``, transient when stderr shows a lost or refused connection.
    (Tools get the password from the environment, so their stderr holds none.)"""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes | bytearray) else stderr
    tail = text.strip()[-_MESSAGE_TAIL:]
    return DatabaseError(f"{program}: exit {code}: {tail}", transient=stderr_is_transient(text))
