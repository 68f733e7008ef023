"""Where deployments are remembered: the recorded releases of each service, its last-good release, and the
latest pre-deploy guard (backup, window) — small JSON documents under ``deploy/`` in the repository, through
the monitor's state-store protocol (:class:`~charhub_ops.monitoring.store.RepositoryStore`), next to the
monitor's ``monitor/state/``.

Why the repository and not Prefect Variables: a record holds the container's environment (secrets, often)
and easily passes a Variable's 5,000 characters; the repository (R2) is private and already holds the
database backups. Keys::

    deploy/record/<service>/<UTC time>-<image id>.json   a ServiceRecord (immutable)
    deploy/last-good/<service>.json                      a Release: the record to roll back to
    deploy/pre/<service>.json                            a Guard: the latest pre-deploy of that service
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, Field

from charhub_ops.backup import write_manifest
from charhub_ops.catalog import load_manifest
from charhub_ops.deploy.record import ServiceRecord
from charhub_ops.errors import ConfigError
from charhub_ops.manifest import Manifest, manifest_key
from charhub_ops.monitoring.store import RepositoryStore, StateStore
from charhub_ops.storage import Storage

__all__ = ["Release", "Guard", "Releases", "open_releases", "pre_deploy_label", "label_backup"]


class Release(BaseModel):
    service: str
    record_key: str
    image_id: str
    tag: str
    at: datetime
    why: str = Field(description="How it was found good: the pre-deploy probe or the post-deploy gate")


class Guard(BaseModel):
    """One pre-deploy: what was recorded, backed up and suppressed for the deployment of ``release``."""

    release: str
    label: str
    at: datetime
    services: list[str]
    records: dict[str, str] = Field(description="service → record key")
    database: str | None = None
    backup_id: str | None = None
    window_id: str | None = None
    window_end: datetime | None = None


class Releases:
    """Typed access to the deploy keys of a StateStore."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def save_record(self, record: ServiceRecord) -> str:
        key = f"record/{record.service}/{record.recorded_at:%Y%m%dT%H%M%SZ}-{record.image_id.split(':')[-1][:12]}"
        self.store.put(key, record.model_dump(mode="json"))
        return key

    def record(self, key: str) -> ServiceRecord:
        data = self.store.get(key)
        if data is None:
            raise ConfigError(f"deploy: the recorded release {key} is missing from the repository")
        return ServiceRecord.model_validate(data)

    def last_good(self, service: str) -> Release | None:
        data = self.store.get(f"last-good/{service}")
        return Release.model_validate(data) if data else None

    def set_last_good(self, release: Release) -> None:
        self.store.put(f"last-good/{release.service}", release.model_dump(mode="json"))

    def guard(self, service: str) -> Guard | None:
        data = self.store.get(f"pre/{service}")
        return Guard.model_validate(data) if data else None

    def save_guard(self, guard: Guard) -> None:
        for service in guard.services:
            self.store.put(f"pre/{service}", guard.model_dump(mode="json"))


def open_releases(storage: Storage) -> Releases:
    return Releases(RepositoryStore(storage, prefix="deploy/"))


def pre_deploy_label(release: str) -> str:
    """``pre-deploy-<release>`` with anything but letters, digits, ``.``, ``_``, ``-`` turned into ``-``."""
    return "pre-deploy-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", release).strip("-")[:80] or "unnamed")


def label_backup(storage: Storage, database: str, backup_id: str, label: str) -> Manifest:
    """Record ``label`` in a backup's manifest (rewritten whole, in one put: the backup stays complete)."""
    manifest = load_manifest(storage, manifest_key(database, backup_id)).model_copy(update={"label": label})
    write_manifest(storage, manifest)
    return manifest
