"""Who can press the buttons: does the Prefect API answer a request that carries no credentials?

Anyone who reaches an open Prefect API (or its UI) can start a restore over production, approve it in the
pause form, roll back a deploy or start a media cleanup. :func:`check_access` asks the API once *without*
an ``Authorization`` header, on an endpoint that Prefect's basic auth (``PREFECT_SERVER_API_AUTH_STRING``)
guards (``GET /admin/version``; ``/health`` and ``/ready`` are exempt): 200 means open, 401/403 means
credentials are required (by Prefect or by a proxy in front of it). :func:`access_warnings` turns the answer
into warning lines: an open API on an address that is not loopback, and credentials sent over plain HTTP to
an address that is not loopback. Pure standard library; never sends, logs or returns the auth string.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Access", "check_access", "credentials_accepted", "access_warnings", "is_loopback"]

PROBE = "/admin/version"  # guarded by the server's basic auth (only GET /health and /ready are exempt)


@dataclass(frozen=True)
class Access:
    """What a request without credentials got. ``open``: None when the API could not be asked."""

    api: str
    loopback: bool
    open: bool | None
    detail: str

    def as_dict(self) -> dict:
        return {"api": self.api, "loopback": self.loopback, "open": self.open, "detail": self.detail}


def is_loopback(host: str) -> bool:
    """Every address ``host`` stands for is a loopback address (127.0.0.0/8, ::1; ``localhost``).
    A name that does not resolve is not loopback."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def check_access(api: str, timeout: float = 10) -> Access:
    """Ask ``api`` (a PREFECT_API_URL, ending in /api) for PROBE without credentials."""
    api = api.rstrip("/")
    loopback = is_loopback(urlsplit(api).hostname or "")
    status = _probe(api, {}, timeout)  # deliberately no Authorization header
    if isinstance(status, str):
        return Access(api, loopback, None, f"not reachable: {status}")
    guarded = status in (401, 403)
    return Access(api, loopback, not guarded if guarded or status < 400 else None, f"HTTP {status} without credentials")


def credentials_accepted(api: str, auth: str, timeout: float = 10) -> bool | None:
    """Does ``api`` accept the basic-auth string ``auth`` (user:password)? None: could not tell."""
    token = base64.b64encode(auth.encode()).decode()
    status = _probe(api.rstrip("/"), {"Authorization": f"Basic {token}"}, timeout)
    if isinstance(status, str):
        return None
    return False if status in (401, 403) else True if status < 400 else None


def _probe(api: str, headers: dict[str, str], timeout: float) -> int | str:
    """The HTTP status of ``GET api + PROBE``, or the name of the error that prevented an answer."""
    try:
        with urllib.request.urlopen(urllib.request.Request(api + PROBE, headers=headers), timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError) as exc:
        return exc.__class__.__name__


def access_warnings(access: Access, credentials: bool) -> list[str]:
    """Warning lines for an API that strangers may reach; ``credentials``: this client sends an auth string."""
    if access.loopback:
        return []
    out = []
    if access.open:
        out.append(f"the Prefect API at {access.api} answers without credentials on a non-loopback address: "
                   "anyone who reaches it can run a restore over production, approve it or roll back a deploy; "
                   "set PREFECT_SERVER_API_AUTH_STRING on the server (PREFECT_API_AUTH_STRING on workers and "
                   "this CLI), see docs/deployments.md, \"Access\"")
    if credentials and urlsplit(access.api).scheme == "http":
        out.append(f"PREFECT_API_AUTH_STRING travels in clear to {access.api}: put the server behind TLS "
                   "(https://) or keep it on loopback")
    return out
