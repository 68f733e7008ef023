"""The monitor's state in Prefect Variables, without importing Prefect: key naming, packing, paging.

:class:`VariableStore` is a :class:`~charhub_ops.monitoring.store.StateStore`: key ``check/web`` → Variable
``charhub-ops-mon-check__web``. A Variable's JSON holds at most 5,000 characters: a longer value is stored
zlib-compressed and base64-encoded (``{"zlib+base64": "…"}``), and one that does not fit even so is a
ConfigError, never a silent truncation.

The Prefect access is one callable, ``connect``, that opens a client as a context manager; the client's
``request(method, path, json=…)`` returns a response with ``.json()``. Prefect's own
``prefect.client.orchestration.get_client(sync_client=True)`` is such a callable (the tasks and the CLI pass
it), and the REST paths used are Prefect's stable API: ``POST /variables/filter``, ``POST /variables/``,
``PATCH`` and ``DELETE /variables/name/{name}``. A missing Variable is read through the filter (an empty
list), so no HTTP error type is needed here.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol
from urllib.parse import quote

from charhub_ops.errors import ConfigError

__all__ = ["VariablesClient", "Connect", "VariableStore", "pack", "unpack", "PREFIX", "LIMIT"]

PREFIX = "charhub-ops-mon-"
TAG = "charhub-ops-monitor"
LIMIT = 4800  # a Variable's JSON must stay under 5,000 characters
_ZIP = "zlib+base64"


class VariablesClient(Protocol):
    """What the store needs of a Prefect client: one REST request (errors raised by the client)."""

    def request(self, method: str, path: str, *, json: Any = None) -> Any: ...


Connect = Callable[[], AbstractContextManager[VariablesClient]]


def pack(value: dict) -> dict:
    """``value``, or its compressed form when its JSON would not fit in a Variable; ConfigError if even that
    does not fit (never a silent truncation)."""
    text = json.dumps(value, default=str)
    if len(text) <= LIMIT:
        return value
    packed = {_ZIP: base64.b64encode(zlib.compress(text.encode(), 9)).decode()}
    if len(packed[_ZIP]) > LIMIT:
        raise ConfigError(f"monitor state: a value of {len(text)} characters does not fit in a Prefect Variable "
                          "even compressed (use CHARHUB_OPS_MONITOR_STATE=repository)")
    return packed


def unpack(value: Any) -> Any:
    """The value :func:`pack` stored (a value stored as it was is returned as it is)."""
    if isinstance(value, dict) and set(value) == {_ZIP}:
        return json.loads(zlib.decompress(base64.b64decode(value[_ZIP])))
    return value


class VariableStore:
    """A StateStore in Prefect Variables, reached through ``connect`` (see the module docstring)."""

    page = 200  # names per request when listing (the API returns at most a page)

    def __init__(self, connect: Connect) -> None:
        self.connect = connect

    @staticmethod
    def _name(key: str) -> str:
        return PREFIX + key.replace("/", "__")

    @staticmethod
    def _read(client: VariablesClient, name: str) -> dict | None:
        found = client.request("POST", "/variables/filter",
                               json={"variables": {"name": {"any_": [name]}}, "limit": 1}).json()
        return found[0] if found else None

    def get(self, key: str) -> dict | None:
        with self.connect() as client:
            var = self._read(client, self._name(key))
        return None if var is None else unpack(var["value"])

    def put(self, key: str, value: dict) -> None:
        name, value = self._name(key), pack(value)
        with self.connect() as client:
            if self._read(client, name) is None:
                client.request("POST", "/variables/", json={"name": name, "value": value, "tags": [TAG]})
            else:
                client.request("PATCH", f"/variables/name/{quote(name)}", json={"name": name, "value": value})

    def delete(self, key: str) -> None:
        """Idempotent: a missing key is not an error."""
        name = self._name(key)
        with self.connect() as client:
            if self._read(client, name) is not None:
                client.request("DELETE", f"/variables/name/{quote(name)}")

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, read page by page."""
        start, names, offset = self._name(prefix), [], 0
        with self.connect() as client:
            while True:
                page = client.request("POST", "/variables/filter", json={
                    "variables": {"name": {"like_": start}}, "offset": offset, "limit": self.page}).json()
                names += [v["name"] for v in page]
                if len(page) < self.page:
                    break
                offset += self.page
        return [n.removeprefix(PREFIX).replace("__", "/") for n in names if n.startswith(start)]
