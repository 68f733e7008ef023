"""Secrets scan (issue #7): backup, restore, verify and prune — and a few failures — run with a password in the
database URL, S3 keys and an age identity; then everything they left behind is searched for each secret.

Searched: the Prefect database (raw bytes of the SQLite file and its WAL, and every file under PREFECT_HOME),
artifacts, events, logs, flow runs, task runs and block documents read through the API, the log records of this
process (formatted with their tracebacks), the CLI's output, the failure notifications, every object of the
repository (zstd objects also decompressed; age objects must start with the age header), and every error text
(message and traceback with its chained causes). Each secret is searched as it is, percent-encoded,
JSON-escaped, lower-cased and in base64 at all three alignments; the marker ``MARK`` shared by the password,
the wrong password and both S3 keys is searched on its own, so a truncated copy is found too.

On purpose, the age identity lives in a Prefect Secret block (restore and verify read it from there; verify
also reads the server URL from one). The
server stores block data Fernet-encrypted (the key is in the ``configuration`` table of the same database), so
no exclusion is needed: even the raw database bytes must not show these values, and the API shows them only to
a client asking ``include_secrets``. A plain copy anywhere — the blocks' own rows included — counts as a leak.
A canary Variable (stored in clear on purpose) proves that the raw scan sees freshly written rows.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

import boto3
import httpx
import psycopg
import pyrage
import pytest
import zstandard
from psycopg import sql
from pyrage import x25519

from charhub_ops.errors import DatabaseError, StorageError, VerificationError
from tests.harness.schema import create_varied_schema
from tests.harness.services import start_pg_cluster, start_s3_server
from tests.harness.webhook import notification_hook

MARK = "zq7f3a9c2e"  # in no name, key or id the scenario makes: only in secrets
PASSWORD = f"Pw-{MARK}:s@cret/1"  # ':', '@' and '/' are percent-encoded in the URL
WRONG_PASSWORD = f"Wrong-{MARK}-pw"
ACCESS_KEY = f"AKIA{MARK.upper()}ACCESS"
SECRET_KEY = f"S3-{MARK}-secret+key/x"
CANARY = "canary-5d1e0b77-in-clear"
ROLE, DB = "charhub", "charhub_db"
IDENTITY_BLOCK, WRONG_BLOCK, URL_BLOCK = "scan-age-identity", "scan-wrong-identity", "scan-database-url"
NO_PERIODS = {"keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}


# --- a malformed URL must not echo its password (no services needed) ----------------------------------

HALVES = ("Left7c1d", "Right9e4b")


@pytest.mark.parametrize("url", [
    "postgresql://u:{0}%zz{1}@h/db",          # invalid percent-encoding: libpq quotes the token
    "postgresql://u:{0}{1}%@h/db",
    "postgresql://u:{0}@{1}@h/db",            # unencoded @: libpq reads the rest as the host
    "postgresql://u:{0}/{1}@h/db",            # unencoded /: libpq reads "u:<password>" as host:port
    "postgresql://u:{0}?{1}@h/db?schema=public",
    "postgresql://u:{0}#{1}@h/db",
    "postgresql://u:{0}{1}@[::1/db",          # a broken IPv6 host
    "host=h user=u password={0} {1}",         # conninfo with an unquoted space
    "host=h user=u password='{0}{1}",
])
def test_malformed_database_url_never_shows_its_password(url):
    from charhub_ops.errors import ConfigError
    from charhub_ops.pgurl import parse_pg_url

    try:
        parsed = parse_pg_url(url.format(*HALVES))
    except ConfigError as exc:
        shown = str(exc)
    else:  # accepted: then libpq read it as intended, and only the password field holds the password
        shown = parsed.redacted() + repr(parsed) + repr({k: v for k, v in parsed.params.items() if k != "password"})
    assert not [half for half in HALVES if half in shown], shown


# --- redaction of what a diagnosis or a rollback report shows (no services needed) -----------------------

SHAPES = ("Hx9-redact-value", "dXNlcjpIeDktcmVkYWN0")


@pytest.mark.parametrize("line", [
    "DB_KEY={0}",                                       # *_KEY= assignments, any prefix
    "export SIGNING_KEY={0} and more",
    "R2_SECRET_ACCESS_KEY = {0}",
    "api_key={0}",
    "JWT_SECRET={0}", "GITHUB_TOKEN={0}", "DB_PASSWORD={0}",
    '{{"password": "{0}", "user": "u"}}',               # JSON string values under secret-looking keys
    '{{"db": {{"Password":"{0}"}}}}',
    '{{"api_key": "{0}"}}', '{{"clientSecret": "{0}"}}', '{{"accessToken": "{0}"}}',
    "Authorization: Basic {1}",                          # HTTP authorization headers, any scheme
    "authorization: Bearer {0}", "Proxy-Authorization: Basic {1}",
    "postgresql://charhub:{0}@db:5432/charhub_db",       # URL passwords
    "ALTER ROLE x PASSWORD '{0}'", "password={0}",
])
def test_redact_masks_every_secret_shape_the_readme_names(line):
    from charhub_ops.monitoring.redact import MASK, redact

    text = line.format(*SHAPES)
    shown = redact(text)
    assert not [s for s in SHAPES if s in shown] and MASK in shown, shown


@pytest.mark.parametrize("line", ["GET /api/v1/health 200", '{"status": "ok", "uptime": 12}',
                                  "keyboard layout: us", "Authorization required"])
def test_redact_leaves_ordinary_text_alone(line):
    from charhub_ops.monitoring.redact import redact

    assert redact(line) == line


# --- the scan ------------------------------------------------------------------------------------------

def _forms(value: str) -> set[str]:
    """The ways a secret can show up in text: as is, URL- and JSON-encoded, lower-cased, base64."""
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1], value.lower()}
    raw = value.encode()
    for skip in range(3):  # base64 of a longer text holds the secret at one of three alignments
        tail = raw[skip:]
        whole = tail[: len(tail) // 3 * 3]
        if len(whole) >= 12:
            forms |= {base64.b64encode(whole).decode(), base64.urlsafe_b64encode(whole).decode()}
    return forms


def needles(secrets: dict[str, str]) -> dict[bytes, str]:
    found = {form.encode(): name for name, value in secrets.items() for form in _forms(value)}
    return {**found, MARK.encode(): "marker"}


def find(data: bytes | str, where: str, secrets: dict[bytes, str]) -> list[str]:
    """One line per secret found in ``data``: where, which secret, and the text around it."""
    blob = data.encode(errors="replace") if isinstance(data, str) else data
    hits = []
    for needle, name in secrets.items():
        at = blob.find(needle)
        if at >= 0:
            hits.append(f"{where}: {name}: …{blob[max(0, at - 80): at + len(needle) + 40]!r}…")
    return hits


def error_text(exc: BaseException) -> str:
    """The message and the full traceback, chained causes included (what a log or the UI may show)."""
    return "".join(traceback.format_exception(exc))


class _Records(logging.Handler):
    """Every log record this process emits (Prefect's, ours, the libraries'), formatted with tracebacks."""

    def __init__(self) -> None:
        super().__init__(level=0)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Scenario:
    secrets: dict[str, str]
    texts: dict[str, str] = field(default_factory=dict)          # error texts, CLI output, logs
    objects: dict[str, bytes] = field(default_factory=dict)      # repository objects, before and after prune
    manifest_globals_key: str = ""
    verifier: str = ""
    identity: x25519.Identity | None = None
    api: str = ""


def _url(port: int, password: str, dbname: str) -> str:
    return f"postgresql://{ROLE}:{quote(password, safe='')}@127.0.0.1:{port}/{dbname}"


def _prepare_server(cluster) -> str:
    """A role with a password on a server that checks it; returns the role's SCRAM verifier."""
    with cluster.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(ROLE), sql.Literal(PASSWORD)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DB), sql.Identifier(ROLE)))
        (verifier,) = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (ROLE,)).fetchone()
    create_varied_schema(cluster.url(DB), rows=40)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(f"postgresql://{ROLE}@127.0.0.1:{cluster.port}/{DB}", connect_timeout=5).close()
    assert verifier.startswith("SCRAM-SHA-256$")
    return verifier


def _snapshot(bucket: str, endpoint: str, label: str) -> dict[str, bytes]:
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                      region_name="us-east-1")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {f"{label} s3://{bucket}/{k}": s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _expect(exc_type, func, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        func(**kwargs)
    return error_text(info.value)


def _run_cli(api: str, repo: str, database_url: str) -> str:
    env = {**os.environ, "PREFECT_API_URL": api, "CHARHUB_OPS_DATABASE_URL": database_url}
    cli = Path(sys.executable).with_name("charhub-ops")
    proc = subprocess.run([str(cli), "backup", "--to", repo], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "password authentication failed" in proc.stderr
    return proc.stdout + proc.stderr


def _flush_to_server(api: str) -> None:
    """Send the queued logs and events, then wait until the server has stored a last event."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    sentinel = f"secrets-scan.done.{uuid.uuid4().hex}"
    emit_event(event="secrets-scan.done", resource={"prefect.resource.id": sentinel})
    APILogWorker.drain_all(timeout=30)
    EventsWorker.drain_all(timeout=30)
    body = {"filter": {"resource": {"id": [sentinel]}}, "limit": 1}
    deadline = time.monotonic() + 60
    while not httpx.post(f"{api}/events/filter", json=body, timeout=10).json()["events"]:
        assert time.monotonic() < deadline, "the server did not store the last event within 60 s"
        time.sleep(0.5)


def _happy_path(s: Scenario, repo: str, pub: str, port: int, mp) -> None:
    from flows.backup import backup_flow
    from flows.prune import prune_flow
    from flows.restore import restore_flow
    from flows.verify import verify_flow

    for _ in range(2):
        backup_flow(repository=repo, encrypt_to=[pub])
    mp.setenv("CHARHUB_OPS_DATABASE_URL", _url(port, PASSWORD, "postgres"))
    restored = restore_flow(repository=repo, target={"target_database": "scan_restored", "with_globals": True},
                            decryption={"identity_secret": IDENTITY_BLOCK})
    assert restored["ok"]
    mp.delenv("CHARHUB_OPS_DATABASE_URL")  # verify reads the server URL from a Secret block instead
    assert verify_flow(repository=repo, decryption={"identity_secret": IDENTITY_BLOCK},
                       access={"database_url_secret": URL_BLOCK})["ok"]
    s.objects.update(_snapshot(repo.split("/")[2], os.environ["AWS_ENDPOINT_URL_S3"], "before prune"))
    prune_flow(repository=repo, policy={"keep_last": 1, "min_keep": 0, **NO_PERIODS})


def _failures(s: Scenario, repo: str, port: int, mp) -> None:
    from flows.backup import backup_flow
    from flows.restore import restore_flow

    mp.setenv("CHARHUB_OPS_DATABASE_URL", _url(port, WRONG_PASSWORD, DB))
    s.texts["wrong password"] = _expect(DatabaseError, backup_flow, repository=repo)
    assert "password authentication failed" in s.texts["wrong password"]
    s.texts["wrong password (CLI)"] = _run_cli(s.api, repo, _url(port, WRONG_PASSWORD, DB))
    mp.setenv("CHARHUB_OPS_DATABASE_URL", _url(port, PASSWORD, "postgres"))
    s.texts["wrong identity"] = _expect(VerificationError, restore_flow, repository=repo,
                                        target={"target_database": "scan_never"},
                                        decryption={"identity_secret": WRONG_BLOCK})
    mp.setenv("CHARHUB_OPS_DATABASE_URL", _url(port, PASSWORD, DB))
    s.texts["bad bucket"] = _expect(StorageError, backup_flow, repository="s3://no-such-bucket-4242/x")
    assert "bucket does not exist" in s.texts["bad bucket"]
    mp.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")  # this S3 server checks keys: ours are unknown to it
    locked = start_s3_server()
    mp.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
    try:
        mp.setenv("CHARHUB_OPS_R2_ENDPOINT_URL", locked.endpoint)
        s.texts["access denied"] = _expect(StorageError, backup_flow, repository=repo)
        assert "InvalidAccessKeyId" in s.texts["access denied"]
    finally:
        mp.delenv("CHARHUB_OPS_R2_ENDPOINT_URL")
        locked.stop()


@pytest.fixture(scope="module")
def scenario(prefect_server, s3_server):
    import prefect.main  # noqa: F401 - Prefect configures logging (replacing root handlers) before ours is added
    from prefect.blocks.system import Secret
    from prefect.variables import Variable

    identity, wrong = x25519.Identity.generate(), x25519.Identity.generate()
    cluster = start_pg_cluster(password_auth=True)
    records = _Records()
    logging.getLogger().addHandler(records)
    try:
        verifier = _prepare_server(cluster)
        s = Scenario(secrets={"password": PASSWORD, "wrong password": WRONG_PASSWORD, "S3 access key": ACCESS_KEY,
                              "S3 secret key": SECRET_KEY, "age identity": str(identity),
                              "wrong age identity": str(wrong), "SCRAM verifier": verifier},
                     verifier=verifier, identity=identity, api=prefect_server)
        for i, part in enumerate(verifier.split("$")[2].split(":")):
            s.secrets[f"SCRAM key {i}"] = part
        bucket = f"scan-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        Secret(value=str(identity)).save(IDENTITY_BLOCK, overwrite=True)
        Secret(value=str(wrong)).save(WRONG_BLOCK, overwrite=True)
        Secret(value=_url(cluster.port, PASSWORD, "postgres")).save(URL_BLOCK, overwrite=True)
        assert Secret.load(IDENTITY_BLOCK).get() == str(identity)
        Variable.set("secrets_scan_canary", CANARY, overwrite=True)
        repo = f"s3://{bucket}/prod"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CHARHUB_OPS_DATABASE_URL", _url(cluster.port, PASSWORD, DB) + "?schema=public")
            mp.setenv("CHARHUB_OPS_R2_ACCESS_KEY_ID", ACCESS_KEY)
            mp.setenv("CHARHUB_OPS_R2_SECRET_ACCESS_KEY", SECRET_KEY)
            mp.delenv("AWS_ACCESS_KEY_ID", raising=False)  # only the keys under test can open the repository
            mp.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
            mp.setenv("CHARHUB_OPS_TASK_RETRIES", "0")
            with notification_hook(mp, "scan-alerts") as bodies:
                _happy_path(s, repo, str(identity.to_public()), cluster.port, mp)
                _failures(s, repo, cluster.port, mp)
            s.texts["notifications"] = "\n".join(bodies)
            assert len(bodies) == 5, bodies  # one per failed run, the CLI's included
            _flush_to_server(prefect_server)
        s.objects.update(_snapshot(bucket, s3_server.endpoint, "after prune"))
        s.manifest_globals_key = _globals_key(s.objects)
        s.texts["log records"] = "\n".join(records.lines)
        yield s
    finally:
        logging.getLogger().removeHandler(records)
        cluster.stop()


def _globals_key(objects: dict[str, bytes]) -> str:
    (key,) = [k for k in objects if k.startswith("after prune") and k.endswith("/manifest.json")]
    return key.split("/prod/")[0] + "/prod/" + json.loads(objects[key])["globals"]["key"]


def _prefect_files() -> list[Path]:
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_DATABASE_CONNECTION_URL

    db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
    files = [p for p in db.parent.glob(db.name + "*") if p.is_file()]
    assert db in files, f"no Prefect database at {db}"
    return files + [p for p in Path(PREFECT_HOME.value()).rglob("*") if p.is_file()]


def test_prefect_database_and_home_hold_no_secret(scenario):
    secrets = needles(scenario.secrets)
    hits, canary = [], False
    for path in _prefect_files():
        data = path.read_bytes()
        canary = canary or CANARY.encode() in data
        hits += find(data, str(path), secrets)
    assert canary, "the raw scan does not see what the server just stored (canary Variable not found)"
    assert hits == []


def _api_pages(api: str, path: str, body: dict | None = None) -> list[str]:
    """Raw JSON of every page of a /filter endpoint (offset paging; events page by next_page)."""
    pages, offset = [], 0
    if path == "events":
        reply = httpx.post(f"{api}/events/filter", json={"limit": 50, **(body or {})}, timeout=30).raise_for_status()
        while True:
            pages.append(reply.text)
            nxt = reply.json().get("next_page")
            if not nxt:
                return pages
            reply = httpx.get(nxt, timeout=30).raise_for_status()
    while True:
        reply = httpx.post(f"{api}/{path}/filter", json={"limit": 200, "offset": offset, **(body or {})},
                           timeout=30).raise_for_status()
        pages.append(reply.text)
        if len(reply.json()) < 200:
            return pages
        offset += 200


def test_api_records_hold_no_secret(scenario):
    secrets = needles(scenario.secrets)
    hits, seen = [], {}
    for path in ("artifacts", "logs", "flow_runs", "task_runs", "block_documents", "events"):
        pages = _api_pages(scenario.api, path)
        seen[path] = sum(len(json.loads(p)["events"] if path == "events" else json.loads(p)) for p in pages)
        hits += [hit for page in pages for hit in find(page, f"API {path}", secrets)]
    assert all(seen.values()), seen  # every surface has records: the scan read something real
    assert hits == []


def test_repository_objects_hold_no_secret(scenario):
    secrets = needles(scenario.secrets)
    hits, kinds = [], set()
    for key, data in scenario.objects.items():
        kinds.add(key.rsplit("/", 1)[1])
        if key.endswith(".age"):
            assert data.startswith(b"age-encryption.org/v1\n"), f"{key} is not age-encrypted"
        elif key.endswith(".zst"):
            hits += find(zstandard.ZstdDecompressor().decompressobj().decompress(data), key + " (decompressed)",
                         secrets)
        hits += find(data, key, secrets)
    assert {"manifest.json", "verification.json", "dump.pgc.zst.age", "globals.sql.zst.age"} <= kinds
    assert hits == []


def test_errors_logs_and_cli_output_hold_no_secret(scenario):
    secrets = needles(scenario.secrets)
    assert set(scenario.texts) == {"wrong password", "wrong password (CLI)", "wrong identity", "bad bucket",
                                   "access denied", "notifications", "log records"}
    assert "roles created" in scenario.texts["log records"]  # the records of the runs were captured
    hits = [hit for where, text in scenario.texts.items() for hit in find(text, where, secrets)]
    assert hits == []


def test_globals_with_role_password_hashes_are_encrypted(scenario):
    """pg_dumpall --globals-only holds every role's SCRAM verifier: with recipients set, only ciphertext is stored."""
    stored = scenario.objects[scenario.manifest_globals_key]
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert scenario.verifier.encode() not in stored
    text = zstandard.ZstdDecompressor().decompressobj().decompress(pyrage.decrypt(stored, [scenario.identity]))
    assert scenario.verifier.encode() in text  # the hash is in the globals: encryption is what protects it
