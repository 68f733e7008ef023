"""The one exception hierarchy of charhub-ops.

Every library error (botocore, psycopg, docker, subprocess) is translated at the boundary of
the core package and re-raised ``from exc``; nothing raw escapes core. Messages name the
system, the operation and the object, e.g. ``s3: put backups/x.dump.zst: AccessDenied``,
and never contain a secret (URLs are redacted before they are put in a message).

Every error is permanent unless the site that raised it knows better and says ``transient=True``
(a network error, an HTTP 5xx or throttling answer, a serialization failure, a lock timeout, a
backend terminated by the server). Only transient errors are retried (``tasks.common.RETRY``);
a disk-full, a missing container, bad input or a programming error fails at once.

    OpsError                      base; the CLI turns it into one red line and exit code 1
    ├── ConfigError               a setting or argument is wrong (names the setting)
    ├── StorageError              a repository operation failed
    │   └── NotFoundError         the object or backup does not exist
    ├── DatabaseError             PostgreSQL refused or failed (connect, query, pg_dump)
    ├── DockerError               the Docker engine or a container failed
    ├── VerificationError         a checksum, row count or content check did not match
    └── PolicyError               a retention/cleanup policy is invalid or would delete everything
"""

from __future__ import annotations

__all__ = [
    "OpsError",
    "ConfigError",
    "StorageError",
    "NotFoundError",
    "DatabaseError",
    "DockerError",
    "VerificationError",
    "PolicyError",
]


class OpsError(Exception):
    """Base of every expected charhub-ops error. ``transient``: retrying the same step may succeed."""

    transient: bool = False

    def __init__(self, message: str = "", *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient


class ConfigError(OpsError):
    """A setting or argument is invalid; the message names it."""


class StorageError(OpsError):
    """A repository (S3/R2, local directory) operation failed."""


class NotFoundError(StorageError):
    """The object or backup does not exist."""


class DatabaseError(OpsError):
    """PostgreSQL (or one of its client tools) failed."""


class DockerError(OpsError):
    """The Docker engine or a container failed."""


class VerificationError(OpsError):
    """A checksum, row count or content hash did not match. ``details`` carries the verdict (if any)."""

    def __init__(self, message: str, details: dict | None = None) -> None:
        super().__init__(message, transient=False)
        self.details = details


class PolicyError(OpsError):
    """A policy is invalid, or applying it would be unsafe."""
