"""Where the monitor's state lives between runs: a small key/value protocol and what is stored under it.

Monitor runs land on different workers (or machines), so the state cannot live in a local file:

* :class:`~charhub_ops.monitoring.variables.VariableStore` keeps each key in a Prefect Variable on the server
  (``auto`` when a Prefect server is configured — always the case on a worker), reached through a client
  the caller passes (Prefect's own; this package never imports Prefect); a Variable holds at most 5,000
  characters, so each check, incident, window and budget is its own small key;
* :class:`RepositoryStore` keeps each key as a JSON object in the repository (``monitor/state/…`` in the
  S3/R2 bucket, or a directory with ``file://``): chosen explicitly (``repository`` or a URL), or by
  ``auto`` without a server for ``charhub-ops health``'s own streaks only.

:func:`resolve_state` is the one rule every command and flow follows, and :func:`open_state` the one way
they open the store it names; a command that writes what the workers
must see (a maintenance window, an incident) refuses ``auto`` without a server rather than writing where no
worker reads (see its docstring). Keys use lowercase letters, digits, ``-``, ``_`` and ``/``. Writes are
last-writer-wins: the monitor deployment runs with concurrency 1, the incident flows one run per check id.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Protocol

from charhub_ops.errors import ConfigError, NotFoundError
from charhub_ops.monitoring.incident_model import Incident
from charhub_ops.monitoring.state import CheckState
from charhub_ops.monitoring.variables import Connect, VariableStore
from charhub_ops.monitoring.windows import AdHocWindow
from charhub_ops.storage import Storage, open_storage

__all__ = ["StateStore", "RepositoryStore", "MonitorState", "repository_state", "resolve_state", "open_state",
           "prefect_server_configured", "budget_key"]


class StateStore(Protocol):
    """Small JSON documents by key. ``get`` returns None for a missing key; ``keys`` lists a prefix."""

    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, value: dict) -> None: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str) -> list[str]: ...


class RepositoryStore:
    """A StateStore in a repository (Storage): one JSON object per key under ``prefix``."""

    def __init__(self, storage: Storage, prefix: str = "monitor/state/") -> None:
        self.storage, self.prefix = storage, prefix

    def get(self, key: str) -> dict | None:
        try:
            return json.loads(self.storage.get_bytes(f"{self.prefix}{key}.json"))
        except NotFoundError:
            return None

    def put(self, key: str, value: dict) -> None:
        self.storage.put_bytes(f"{self.prefix}{key}.json", json.dumps(value, default=str).encode())

    def delete(self, key: str) -> None:
        self.storage.delete_many([f"{self.prefix}{key}.json"])

    def keys(self, prefix: str) -> list[str]:
        return [o.key.removeprefix(self.prefix).removesuffix(".json")
                for o in self.storage.list(self.prefix + prefix) if o.key.endswith(".json")]


class MonitorState:
    """Typed access to the store: check states, incidents (one open per check), windows, restart budgets."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def check(self, check_id: str) -> CheckState:
        data = self.store.get(f"check/{check_id}")
        return CheckState.model_validate(data) if data else CheckState(check_id=check_id)

    def save_check(self, state: CheckState) -> None:
        self.store.put(f"check/{state.check_id}", state.model_dump(mode="json"))

    def incident(self, incident_id: str) -> Incident | None:
        data = self.store.get(f"incident/{incident_id}")
        return Incident.model_validate(data) if data else None

    def open_incident(self, check_id: str) -> Incident | None:
        ref = self.store.get(f"open/{check_id}")
        return self.incident(ref["incident_id"]) if ref else None

    def save_incident(self, incident: Incident) -> None:
        self.store.put(f"incident/{incident.id}", incident.model_dump(mode="json"))
        if incident.status == "resolved":
            ref = self.store.get(f"open/{incident.check_id}")
            if ref and ref["incident_id"] == incident.id:
                self.store.delete(f"open/{incident.check_id}")
        else:
            self.store.put(f"open/{incident.check_id}", {"incident_id": incident.id})

    def incidents(self) -> list[Incident]:
        """Open and closed, newest first."""
        found = [i for k in self.store.keys("incident/") if (i := self.incident(k.removeprefix("incident/")))]
        return sorted(found, key=lambda i: i.opened_at, reverse=True)

    def prune_incidents(self, now: datetime, keep_days: float) -> list[str]:
        """Forget resolved incidents closed more than ``keep_days`` ago (their reports stay); returns their ids."""
        limit = keep_days * 86400
        old = [i.id for i in self.incidents()
               if i.status == "resolved" and i.resolved_at and (now - i.resolved_at).total_seconds() > limit]
        for incident_id in old:
            self.store.delete(f"incident/{incident_id}")
        return old

    def prune_windows(self, now: datetime) -> list[str]:
        """Forget ad hoc windows that ended more than a day ago."""
        old = [w.id for w in self.windows() if (now - w.end).total_seconds() > 86400]
        for window_id in old:
            self.delete_window(window_id)
        return old

    def windows(self) -> list[AdHocWindow]:
        return [AdHocWindow.model_validate(d) for k in self.store.keys("window/") if (d := self.store.get(k))]

    def save_window(self, window: AdHocWindow) -> None:
        self.store.put(f"window/{window.id}", window.model_dump(mode="json"))

    def delete_window(self, window_id: str) -> None:
        self.store.delete(f"window/{window_id}")

    def restarts(self, container: str) -> list[datetime]:
        """Restarts of ``container`` (by any check) kept for its budget."""
        data = self.store.get(budget_key(container)) or {"restarts": []}
        return [datetime.fromisoformat(t) for t in data["restarts"]]

    def save_restarts(self, container: str, times: list[datetime]) -> None:
        self.store.put(budget_key(container), {"container": container, "restarts": [t.isoformat() for t in times]})


def budget_key(container: str) -> str:
    """The key of ``container``'s restart budget: its name when that is a valid key (lowercase letters, digits,
    ``-``, ``_``), else the name made valid plus a hash of the real one (Docker names may hold ``.`` or capitals)."""
    safe = re.sub(r"[^a-z0-9_-]", "-", container.lower())
    if safe != container:
        safe = f"{safe[:40]}-{hashlib.sha256(container.encode()).hexdigest()[:10]}"
    return f"budget/{safe}"


def prefect_server_configured() -> bool:
    """A Prefect server is configured, as Prefect would find it before it is loaded: the environment variable
    PREFECT_API_URL, else the active profile's (``PREFECT_PROFILE`` or the ``active`` one of
    ``PREFECT_PROFILES_PATH``, default ``$PREFECT_HOME/profiles.toml``, ``~/.prefect/profiles.toml``). Once
    Prefect is loaded its own setting is the answer: the callers that may have loaded it ask it first
    (``charhub_ops.cli.health.prefect_server``, ``tasks.monitor.prefect_server``)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    return bool(profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL"))


_NO_SERVER = ("no Prefect server is configured here (PREFECT_API_URL, in the environment or the active "
              "Prefect profile)")


def resolve_state(settings, spec: str | None, prefect_server: bool, shared: bool = True) -> str:
    """Where the monitor's state lives: ``prefect`` (Variables) or a repository URL — one rule for every
    command and flow. ``spec`` defaults to setting monitor_state. ``auto`` is Prefect Variables when a server
    is configured: where the workers (which always have one) keep streaks, incidents and windows. Without a
    server, ``auto`` falls back to the repository only when ``shared`` is False (``health``'s own streaks);
    anything the workers must see (windows, incidents) fails with one line instead of silently going where
    no worker reads it. ``prefect`` without a server fails too (an ephemeral API's Variables vanish)."""
    spec = spec or settings.monitor.state
    if spec in ("auto", "prefect") and prefect_server:
        return "prefect"
    if spec == "prefect" or (spec == "auto" and shared):
        raise ConfigError(f"monitor_state: {spec} keeps windows and incidents in Prefect Variables, where the "
                          f"workers read them, but {_NO_SERVER}: set PREFECT_API_URL, or set "
                          "CHARHUB_OPS_MONITOR_STATE=repository (or a file:// / s3:// URL) here and on every worker")
    if spec in ("auto", "repository"):
        spec = settings.storage.repository
    if not spec.startswith(("file://", "s3://")):
        raise ConfigError(f"monitor_state: {spec!r}: use auto, prefect, repository, file:///dir or s3://bucket/prefix")
    return spec


def repository_state(settings, spec: str | None, prefect_server: bool, shared: bool = False) -> MonitorState | None:
    """The store :func:`resolve_state` names when it is a repository; None when it is Prefect Variables."""
    where = resolve_state(settings, spec, prefect_server, shared)
    if where == "prefect":
        return None
    return MonitorState(RepositoryStore(open_storage(where, settings.storage.s3_options(), "monitor_state")))


def open_state(settings, spec: str | None, prefect_server: bool, connect: Connect, shared: bool = True) -> MonitorState:
    """The store named by ``spec`` (default: setting monitor_state) — auto | prefect | repository | URL — by
    the one rule of :func:`resolve_state` (``shared``: windows and incidents the workers must see). Prefect
    Variables are reached through ``connect`` (Prefect's ``get_client(sync_client=True)``; see
    charhub_ops.monitoring.variables), called only when the store is used."""
    return repository_state(settings, spec, prefect_server, shared) or MonitorState(VariableStore(connect))
