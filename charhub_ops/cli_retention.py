"""CLI commands of the retention pipeline (`backups prune`, `retention plan`)."""

from __future__ import annotations

from charhub_ops.cli import app, backups_app  # noqa: F401
