"""Who can press the buttons: `setup` and `status` say whether the Prefect API answers without credentials.

Against real ``prefect server`` processes bound to every address: one open (no auth), one with basic auth
and CSRF protection on (PREFECT_SERVER_API_AUTH_STRING, as "Access" in docs/deployments.md asks). The CLI runs as
a subprocess, as an operator runs it, reaching the server by loopback or by this machine's own address.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from charhub_ops.access import Access, access_warnings, is_loopback
from charhub_ops.cleanup.prefect_vacuum import RECOMMENDED_ENV
from tests.harness.prefect_server import BIN, ROOT, kill, start_prefect_server

AUTH = f"ops:{uuid.uuid4().hex}"
NAMES = "PREFECT_SERVER_API_AUTH_STRING"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("192.0.2.2", False), ("10.1.2.3", False), ("0.0.0.0", False), ("no-such-host.invalid", False),
])
def test_loopback_addresses(host, loopback) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("api", "open_", "credentials", "expected"), [
    ("http://127.0.0.1:4200/api", True, False, []),  # loopback: only this machine reaches it
    ("http://10.0.0.5:4200/api", True, False, [NAMES]),
    ("https://prefect.internal/api", True, False, [NAMES]),
    ("https://prefect.internal/api", False, True, []),
    ("http://10.0.0.5:4200/api", False, True, ["TLS"]),  # the auth string would travel in clear
    ("http://10.0.0.5:4200/api", None, False, []),  # not reachable: setup/status fail on their own
])
def test_access_warnings(api, open_, credentials, expected) -> None:
    from urllib.parse import urlsplit

    access = Access(api, is_loopback(urlsplit(api).hostname), open_, "")
    warnings = access_warnings(access, credentials)
    assert len(warnings) == len(expected) and all(w in line for w, line in zip(expected, warnings, strict=True))


def _own_address() -> str:
    """This machine's first address that is not loopback (a server bound to 0.0.0.0 answers there)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout.split()
    addresses = [a for a in out if ":" not in a and not a.startswith("127.")]
    assert addresses, "no non-loopback IPv4 address on this machine"
    return addresses[0]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(open API URL, guarded API URL), both bound to 0.0.0.0."""
    procs = []
    try:
        for auth in (None, AUTH):
            procs.append(start_prefect_server(tmp_path_factory.mktemp("access"), host="0.0.0.0", auth=auth,
                                              settings=RECOMMENDED_ENV))  # retention as docs/prefect-retention.md
        yield procs[0][1], procs[1][1]
    finally:
        for proc, _ in procs:
            kill(proc)


def _via(api: str, host: str) -> str:
    return api.replace("127.0.0.1", host, 1)


def _cli(tmp_path: Path, api: str, *args: str, auth: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "cli"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               CHARHUB_OPS_HOME=str(ROOT))
    env.pop("CHARHUB_OPS_NOTIFY_BLOCK", None)
    if auth:
        env["PREFECT_API_AUTH_STRING"] = auth
    done = subprocess.run([str(BIN / "charhub-ops"), *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert AUTH not in done.stdout + done.stderr, "the auth string reached the output"
    return done


def _get(url: str, auth: str | None = None, method: str = "GET") -> int:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    request = urllib.request.Request(url, method=method, headers={**headers, "Content-Type": "application/json"},
                                     data=b"{}" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_status_warns_when_the_api_answers_strangers_on_a_non_loopback_address(servers, tmp_path) -> None:
    open_api, _ = servers
    outside = _cli(tmp_path, _via(open_api, _own_address()), "status")
    assert outside.returncode == 0, outside.stderr
    (line,) = [line for line in outside.stderr.splitlines() if "warning" in line]
    assert NAMES in line and "without credentials" in line
    local = _cli(tmp_path, open_api, "status")
    assert local.returncode == 0 and "warning" not in local.stderr, local.stderr


def test_with_auth_a_request_without_credentials_is_refused_and_setup_does_not_warn(servers, tmp_path) -> None:
    _, guarded = servers
    outside = _via(guarded, _own_address())
    assert _get(outside + "/admin/version") == 401
    assert _get(outside + "/flows/filter", method="POST") in (401, 403)  # CSRF protection answers first
    assert _get(outside + "/admin/version", auth="ops:wrong") == 401
    assert _get(outside + "/admin/version", auth=AUTH) == 200
    done = _cli(tmp_path, guarded, "setup", "--json", auth=AUTH)  # workers and the CLI: PREFECT_API_AUTH_STRING
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["access"]["open"] is False and len(result["deployments"]) > 5
    assert not [w for w in result["warnings"] if NAMES in w or "TLS" in w]
    status = _cli(tmp_path, outside, "status", "--json", auth=AUTH)
    assert status.returncode == 0, status.stderr
    assert {r["last_state"] for r in json.loads(status.stdout)} == {None}
    (tls,) = [line for line in status.stderr.splitlines() if "warning" in line]  # http to a non-loopback address
    assert "TLS" in tls and NAMES not in tls


@pytest.mark.parametrize(("auth", "says"), [(None, "requires credentials"), ("ops:wrong", "refused")])
def test_without_the_right_auth_string_the_cli_says_which_setting(servers, tmp_path, auth, says) -> None:
    _, guarded = servers
    done = _cli(tmp_path, guarded, "status", auth=auth)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert says in line and "PREFECT_API_AUTH_STRING" in line and (auth or AUTH) not in line
