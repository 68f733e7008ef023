"""Where deployments are remembered: the recorded releases of each service, its last-good release, and the
latest pre-deploy guard (backup, window) — small JSON documents under ``deploy/`` in the repository, through
the monitor's state-store protocol (:class:`~charhub_ops.monitoring.store.RepositoryStore`), next to the
monitor's ``monitor/state/``.

Why the repository and not Prefect Variables: a record holds the container's environment (secrets, often)
and easily passes a Variable's 5,000 characters; the repository (R2) is private and already holds the
database backups. With backup recipients (``encrypt_to``) a record is stored age-encrypted to them (the
whole record: env, cmd and health check may all hold secrets) beside its summary (variable names, never
values); reading it back needs an age identity. Without recipients the record is plain JSON, values
included (docs/pipelines/deploy.md warns, as the README does for globals). Keys::

    deploy/record/<service>/<UTC time>-<image id>.json   a ServiceRecord (immutable), sealed or plain
    deploy/last-good/<service>.json                      a Release: the record to roll back to
    deploy/pre/<service>.json                            a Guard: the latest pre-deploy of that service
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import datetime

import pyrage
from pydantic import BaseModel, Field

from charhub_ops.backup.catalog import load_manifest
from charhub_ops.backup.engine import write_manifest
from charhub_ops.backup.manifest import Manifest, manifest_key
from charhub_ops.deploy.record import ServiceRecord
from charhub_ops.errors import ConfigError
from charhub_ops.monitoring.store import RepositoryStore, StateStore
from charhub_ops.storage import Storage
from charhub_ops.streams import parse_recipients, recipient_fingerprint

__all__ = ["Release", "Guard", "Releases", "open_releases", "pre_deploy_label", "label_backup",
           "protected_images"]


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
    """Typed access to the deploy keys of a StateStore; records sealed to ``recipients`` (age public keys)
    when there are any, opened with ``identities()`` (called only for a sealed record)."""

    def __init__(self, store: StateStore, recipients: list[str] | None = None,
                 identities: Callable[[], list] | None = None) -> None:
        self.store, self.recipients, self.identities = store, recipients or [], identities

    def save_record(self, record: ServiceRecord) -> str:
        key = f"record/{record.service}/{record.recorded_at:%Y%m%dT%H%M%SZ}-{record.image_id.split(':')[-1][:12]}"
        body = record.model_dump(mode="json")
        if self.recipients:
            sealed = pyrage.encrypt(json.dumps(body).encode(), parse_recipients(self.recipients))
            body = {"summary": record.summary(), "sealed": base64.b64encode(sealed).decode(),
                    "recipients": [recipient_fingerprint(r) for r in self.recipients]}
        self.store.put(key, body)
        return key

    def record(self, key: str) -> ServiceRecord:
        data = self.store.get(key)
        if data is None:
            raise ConfigError(f"deploy: the recorded release {key} is missing from the repository")
        if "sealed" in data:
            data = json.loads(self._open(key, base64.b64decode(data["sealed"])))
        return ServiceRecord.model_validate(data)

    def _open(self, key: str, sealed: bytes) -> bytes:
        if self.identities is None:
            raise ConfigError(f"deploy: the recorded release {key} is age-encrypted: set "
                              "CHARHUB_OPS_AGE_IDENTITY_FILE (or create the Secret block age_identity_block)")
        try:
            return pyrage.decrypt(sealed, self.identities())
        except pyrage.DecryptError:
            raise ConfigError(f"deploy: the recorded release {key} cannot be decrypted with the age identity "
                              "(CHARHUB_OPS_AGE_IDENTITY_FILE / age_identity_block): not one of its recipients"
                              ) from None

    def last_goods(self) -> list[Release]:
        """The last-good release of every service that has one."""
        return [Release.model_validate(d) for k in self.store.keys("last-good/") if (d := self.store.get(k))]

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


def open_releases(storage: Storage, recipients: list[str] | None = None,
                  identities: Callable[[], list] | None = None) -> Releases:
    return Releases(RepositoryStore(storage, prefix="deploy/"), recipients, identities)


def protected_images(storage: Storage) -> dict[str, str]:
    """Image id → why the Docker cleanup must keep it: the last-good release of a service (what a rollback
    recreates). Older records are not rollback targets and protect nothing."""
    return {r.image_id: f"last-good of {r.service} ({r.tag})" for r in open_releases(storage).last_goods()}


def pre_deploy_label(release: str) -> str:
    """``pre-deploy-<release>`` with anything but letters, digits, ``.``, ``_``, ``-`` turned into ``-``."""
    return "pre-deploy-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", release).strip("-")[:80] or "unnamed")


def label_backup(storage: Storage, database: str, backup_id: str, label: str) -> Manifest:
    """Record ``label`` in a backup's manifest (rewritten whole, in one put: the backup stays complete)."""
    manifest = load_manifest(storage, manifest_key(database, backup_id)).model_copy(update={"label": label})
    write_manifest(storage, manifest)
    return manifest
