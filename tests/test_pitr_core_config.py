"""pgbackrest.conf rendered from the settings, its validation, and pgBackRest's errors classified (pure)."""

from __future__ import annotations

import os

import pytest

from charhub_ops.errors import ConfigError
from charhub_ops.pitr.command import PgBackRestError, classify
from charhub_ops.pitr.config import parse_repository, render_config, repository_options
from charhub_ops.settings.pipelines import PitrSettings
from charhub_ops.settings.shared import StorageSettings

PASS = "pass-phrase-8c1d"
KEY, SECRET = "AKIAKEY8c1d", "secret-key-8c1d/+x"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("CHARHUB_OPS_", "R2_", "AWS_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir("/")  # no .env


def pitr(**kw) -> PitrSettings:
    return PitrSettings(_env_file=None, **{"repository": "file:///var/lib/pgbackrest", **kw})


def storage(**kw) -> StorageSettings:
    return StorageSettings(_env_file=None, **{"repository": "s3://charhub-backups/logical", **kw})


def parse(text: str) -> dict[str, dict[str, str]]:
    sections, current = {}, None
    for line in text.splitlines():
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            assert key not in current, f"{key} twice"
            current[key] = value
    return sections


def test_posix_repository():
    conf = parse(render_config(pitr(), storage(), pg_port=5433, cipher_pass=PASS, pg_user="charhub"))
    g = conf["global"]
    assert g["repo1-type"] == "posix" and g["repo1-path"] == "/var/lib/pgbackrest"
    assert not any(k.startswith("repo1-s3") for k in g)
    assert (g["repo1-bundle"], g["compress-type"], g["compress-level"], g["start-fast"]) == ("y", "zst", "3", "y")
    assert (g["repo1-cipher-type"], g["repo1-cipher-pass"]) == ("aes-256-cbc", PASS)
    assert (g["repo1-retention-full"], g["repo1-retention-diff"], g["repo1-retention-full-type"]) == ("4", "7", "count")
    assert (g["log-level-console"], g["log-level-stderr"], g["log-level-file"]) == ("off", "warn", "off")
    assert g["process-max"] == "2" and g["archive-async"] == "n" and g["io-timeout"] == "60"
    assert "repo1-block" not in g and "beta" not in g
    assert conf["charhub"] == {"pg1-path": "/var/lib/postgresql/data", "pg1-port": "5433",
                               "pg1-socket-path": "/var/run/postgresql", "pg1-user": "charhub"}


def test_r2_repository_with_its_endpoint_keys_and_a_private_ca():
    st = storage(r2_endpoint_url="https://acct.r2.cloudflarestorage.com", r2_access_key_id=KEY,
                 r2_secret_access_key=SECRET)
    p = pitr(repository="s3://charhub-pitr/prod/pg", s3_ca_file="/etc/ssl/ca.pem", block_incremental=True,
             compress_level=6, process_max=4, keep_weekly=5, keep_daily=14, stanza="main")
    conf = parse(render_config(p, st, pg_port=5432, cipher_pass=PASS))
    g = conf["global"]
    assert (g["repo1-type"], g["repo1-s3-bucket"], g["repo1-path"]) == ("s3", "charhub-pitr", "/prod/pg")
    assert (g["repo1-s3-endpoint"], g["repo1-s3-region"], g["repo1-s3-uri-style"]) == (
        "acct.r2.cloudflarestorage.com", "auto", "path")
    assert "repo1-storage-port" not in g and "repo1-storage-verify-tls" not in g
    assert g["repo1-storage-ca-file"] == "/etc/ssl/ca.pem"
    assert (g["repo1-s3-key"], g["repo1-s3-key-secret"]) == (KEY, SECRET)
    assert (g["repo1-block"], g["beta"], g["compress-level"], g["process-max"]) == ("y", "y", "6", "4")
    assert (g["repo1-retention-full"], g["repo1-retention-diff"]) == ("5", "14")
    assert "pg1-user" not in conf["main"]


def test_options_without_secrets_and_an_endpoint_port():
    st = storage(r2_endpoint_url="https://127.0.0.1:9443", r2_access_key_id=KEY, r2_secret_access_key=SECRET,
                 s3_region="eu-west-1")
    options = repository_options(pitr(repository="s3://b", s3_verify_tls=False), st)
    assert (options["repo1-path"], options["repo1-storage-port"], options["repo1-storage-verify-tls"]) == (
        "/", "9443", "n")
    assert options["repo1-s3-region"] == "eu-west-1"
    assert PASS not in str(options) and KEY not in str(options) and SECRET not in str(options)


def test_aws_without_an_endpoint_uses_the_regional_host(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    options = repository_options(pitr(repository="s3://b/p"), storage())
    assert (options["repo1-s3-endpoint"], options["repo1-s3-region"]) == ("s3.eu-central-1.amazonaws.com",
                                                                          "eu-central-1")


@pytest.mark.parametrize(("url", "kind", "path", "bucket"), [
    ("file:///srv/pgbackrest/", "posix", "/srv/pgbackrest", None),
    ("s3://bucket", "s3", "/", "bucket"),
    ("s3://bucket/a/b/", "s3", "/a/b", "bucket"),
])
def test_parse_repository(url, kind, path, bucket):
    repo = parse_repository(url)
    assert (repo.kind, repo.path, repo.bucket) == (kind, path, bucket)


@pytest.mark.parametrize(("pitr_kw", "storage_kw", "media", "needle"), [
    ({"repository": None}, {}, None, "pitr_repository: not set"),
    ({"repository": "file://relative/dir"}, {}, None, "pitr_repository: 'file://relative/dir' is not an absolute"),
    ({"repository": "gs://bucket/x"}, {}, None, "pitr_repository: 'gs://bucket/x' is not supported"),
    ({"repository": "s3:///nobucket"}, {}, None, "pitr_repository: 's3:///nobucket' is not supported"),
    ({"repository": "s3://charhub-backups/logical"}, {}, None, "pitr_repository: overlaps the logical"),
    ({"repository": "s3://charhub-backups/logical/pitr"}, {}, None, "pitr_repository: overlaps the logical"),
    ({"repository": "s3://charhub-backups"}, {}, None, "pitr_repository: overlaps the logical"),
    ({"repository": "file:///srv/backups/pitr"}, {"repository": "file:///srv/backups"}, None, "overlaps the logical"),
    ({"repository": "s3://charhub-media/pitr"}, {}, "s3://charhub-media", "pitr_repository: is in the media bucket"),
    ({"repository": "s3://p/x"}, {"r2_endpoint_url": "http://127.0.0.1:9000", "r2_access_key_id": KEY,
                                  "r2_secret_access_key": SECRET}, None, "r2_endpoint_url: 'http://127.0.0.1:9000'"),
    ({"repository": "s3://p/x"}, {}, None, "s3_region: not set"),
])
def test_invalid_settings_name_the_setting(pitr_kw, storage_kw, media, needle):
    with pytest.raises(ConfigError) as caught:
        render_config(pitr(**pitr_kw), storage(**storage_kw), pg_port=5432, cipher_pass=PASS, media_repository=media)
    assert needle in str(caught.value)


def test_a_separate_prefix_of_the_logical_bucket_is_allowed():
    st = storage(r2_endpoint_url="https://e.example", r2_access_key_id=KEY, r2_secret_access_key=SECRET)
    assert repository_options(pitr(repository="s3://charhub-backups/pitr"), st)["repo1-path"] == "/pitr"


@pytest.mark.parametrize(("storage_kw", "cipher", "needle"), [
    ({}, None, "pitr_cipher_pass: not set"),
    ({}, "", "pitr_cipher_pass: not set"),
    ({"r2_access_key_id": KEY}, PASS, "r2_secret_access_key: not set"),
    ({"r2_secret_access_key": SECRET}, PASS, "r2_access_key_id: not set"),
    ({"r2_access_key_id": KEY, "r2_secret_access_key": SECRET}, "two\nlines", "repo1-cipher-pass contains a line"),
])
def test_missing_secrets_name_the_setting_and_show_no_secret(storage_kw, cipher, needle):
    st = storage(r2_endpoint_url="https://e.example", **storage_kw)
    with pytest.raises(ConfigError) as caught:
        render_config(pitr(repository="s3://pitr/x"), st, pg_port=5432, cipher_pass=cipher)
    assert needle in str(caught.value)
    for secret in (KEY, SECRET, "two\nlines"):
        assert secret not in str(caught.value)


# --- pgBackRest's stderr → one line (texts as pgBackRest 2.45 printed them here) ---------------------------
LOCK = ("ERROR: [050]: unable to acquire lock on file '/tmp/pgbackrest/s-backup.lock': Resource temporarily "
        "unavailable\n       HINT: is another pgBackRest process running?")
MISSING = ("ERROR: [055]: unable to load info file '/r/backup/s/backup.info' or '/r/backup/s/backup.info.copy':\n"
           "       FileMissingError: unable to open missing file '/r/backup/s/backup.info' for read\n"
           "       HINT: has a stanza-create been performed?")
PASSPHRASE = ("ERROR: [029]: unable to load info file '/r/backup/s/backup.info' or '/r/backup/s/backup.info.copy':\n"
              "       FormatError: key/value found outside of section at line 1: \x01\x7f]\n"
              "       HINT: has a stanza-create been performed?")
TIMEOUT = ("ERROR: [082]: WAL segment 000000010000000000000004 was not archived before the 3000ms timeout\n"
           "       HINT: check the archive_command to ensure that all options are correct (especially --stanza).")
CONNECT = "ERROR: [049]: unable to connect to '127.0.0.1:1': [111] Connection refused"
TLS = ("ERROR: [095]: unable to verify certificate presented by '127.0.0.1:59541': [18] self-signed certificate")
NOCONF = "ERROR: [055]: unable to open missing file '/etc/pgbackrest/pgbackrest.conf' for read"


@pytest.mark.parametrize(("stderr", "kind", "code", "transient", "needle"), [
    (LOCK, "lock", 50, True, "pgbackrest backup (stanza s): another pgBackRest command holds this stanza's lock"),
    (MISSING, "missing-stanza", 55, False, "pgbackrest backup (stanza s): the stanza does not exist in the "
                                           "repository yet: run `charhub-ops pitr setup`"),
    (PASSPHRASE, "passphrase", 29, False, "wrong passphrase (pitr_cipher_pass"),
    (TIMEOUT, "archive-timeout", 82, False, "was not archived before the 3000ms timeout: PostgreSQL's archive_command"),
    (CONNECT, "unreachable", 49, True, "repository unreachable: unable to connect to '127.0.0.1:1'"),
    (TLS, "tls", 95, False, "self-signed certificate (pitr_s3_ca_file, pitr_s3_verify_tls)"),
    (NOCONF, "not-configured", 55, False, "no configuration at /etc/pgbackrest/pgbackrest.conf (pitr_config_path)"),
    ("WARN: something\nboom happened\n", "other", None, False, "pgbackrest backup: boom happened"),
    ("", "other", None, False, "pgbackrest backup: exit 3 without a message"),
    ("ERROR: [038]: PostgreSQL is running", "other", 38, False, "pgbackrest backup: [038] PostgreSQL is running"),
])
def test_classify(stderr, kind, code, transient, needle):
    error = classify("backup", stderr, exit_code=3, stanza="s", config="/etc/pgbackrest/pgbackrest.conf")
    assert isinstance(error, PgBackRestError)
    assert (error.kind, error.code, error.transient) == (kind, code, transient)
    assert needle in str(error) and "\n" not in str(error)


def test_classify_masks_secrets():
    error = classify("check", f"ERROR: [105]: access denied for key {KEY}", secrets=[KEY])
    assert error.kind == "access" and KEY not in str(error) and "r2_access_key_id" in str(error)


@pytest.mark.parametrize(("module", "names"), [
    ("charhub_ops.pitr.config", {"Repository", "parse_repository", "repository_options", "render_config",
                                 "CIPHER_TYPE"}),
    ("charhub_ops.pitr.command", {"PgBackRest", "PgBackRestError", "classify", "read_info", "ERROR_NAMES"}),
    ("charhub_ops.pitr.ops", {"BACKUP_KINDS", "Pitr", "SetupResult", "ExpireResult", "connect", "setup", "backup",
                              "expire", "info", "backup_summary", "stanza_summary"}),
    ("charhub_ops.pitr.retention", {"RetentionMapping", "map_retention", "MAX_COUNT"}),
])
def test_public_api_is_pinned(module, names):
    import importlib

    mod = importlib.import_module(module)
    assert set(mod.__all__) == names and all(hasattr(mod, n) for n in names)


def test_the_pitr_group_lists_its_commands_and_imports_no_prefect():
    import subprocess
    import sys

    code = ("import sys, charhub_ops.cli.pitr as p; assert 'prefect' not in sys.modules; "
            "print(' '.join(c.name or c.callback.__name__ for c in p.app.registered_commands))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60)
    assert {"setup", "backup", "info", "expire"} <= set(out.stdout.split())
