"""pgBackRest's configuration, rendered from the settings (``pitr`` and ``storage`` groups).

``parse_repository(url) -> Repository``
    ``file:///abs/path`` → posix; ``s3://bucket[/prefix]`` → S3 (R2: the storage group's endpoint and keys).
    Anything else (unset, relative, another scheme) raises ``ConfigError`` naming ``pitr_repository``.
``repository_options(pitr, storage, *, media_repository=None) -> dict[str, str]``
    The ``repo1-*`` options without a secret (type, path, bucket, endpoint, port, region, URI style, TLS,
    bundling, block incremental, cipher type, retention). Refuses a repository that is, contains or lies
    inside the logical backups' repository (``repository``), or that is in the media bucket
    (``cleanup_media_repository``: CharHub's orphan cleaner deletes what it does not know).
``render_config(pitr, storage, *, pg_port, cipher_pass, pg_user=None, media_repository=None) -> str``
    The whole ``pgbackrest.conf``: ``[global]`` (repository, secrets, compression, processes, logging) and
    ``[<stanza>]`` (``pg1-path``, ``pg1-port``, ``pg1-socket-path``, ``pg1-user``). The passphrase and the S3
    keys appear only here (the file is written 0640, owned by postgres): never on a command line. A missing
    passphrase or S3 key raises ``ConfigError`` naming the setting.

Choices: ``repo1-bundle=y`` (small files bundled: fewer S3 requests, faster backups); ``compress-type=zst``;
``start-fast=y`` (a backup starts with an immediate checkpoint rather than waiting for the next one);
``archive-async`` off — CharHub writes little WAL (one segment per ``archive_timeout`` when idle), the
synchronous ``archive-push`` needs no spool directory in the container and a segment is acknowledged only
once it is in the repository; console logging off and stderr at ``warn`` (stdout carries only the JSON we
parse, stderr the ``ERROR: [NNN]: ...`` lines ``command.py`` classifies); file logging off (``archive-push``'s
failures reach PostgreSQL's log through ``archive_command``'s stderr). ``repo1-block=y`` only with
``pitr_block_incremental`` (a beta feature in 2.45: then ``beta=y``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from charhub_ops.errors import ConfigError
from charhub_ops.pitr.retention import map_retention
from charhub_ops.settings.pipelines import PitrSettings
from charhub_ops.settings.shared import StorageSettings

__all__ = ["Repository", "parse_repository", "repository_options", "render_config", "CIPHER_TYPE"]

CIPHER_TYPE = "aes-256-cbc"
_SETTING = "pitr_repository"


@dataclass(frozen=True)
class Repository:
    kind: str  # posix | s3
    path: str  # repo1-path: absolute ("/" for a bucket's root)
    bucket: str | None = None

    def overlaps(self, other: Repository) -> bool:
        """Same storage and one path equal to or inside the other."""
        if (self.kind, self.bucket) != (other.kind, other.bucket):
            return False
        a, b = PurePosixPath(self.path), PurePosixPath(other.path)
        return a == b or a in b.parents or b in a.parents


def parse_repository(url: str | None, setting: str = _SETTING) -> Repository:
    if not url:
        raise ConfigError(f"{setting}: not set (s3://bucket/prefix or file:///path; CHARHUB_OPS_PITR_REPOSITORY)")
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = parts.netloc + parts.path if parts.netloc in ("", ".", "..") else None
        if not path or not path.startswith("/"):
            raise ConfigError(f"{setting}: '{url}' is not an absolute path (file:///path)")
        return Repository("posix", str(PurePosixPath(path)))
    if parts.scheme == "s3" and parts.netloc:
        return Repository("s3", str(PurePosixPath("/" + parts.path.strip("/"))), bucket=parts.netloc)
    raise ConfigError(f"{setting}: '{url}' is not supported (use s3://bucket/prefix or file:///path)")


def _logical(url: str) -> Repository | None:
    """The logical repository as a Repository (a relative ``file://`` path resolved against the cwd)."""
    parts = urlsplit(url)
    if parts.scheme == "s3" and parts.netloc:
        return Repository("s3", str(PurePosixPath("/" + parts.path.strip("/"))), bucket=parts.netloc)
    if parts.scheme in ("file", ""):
        return Repository("posix", os.path.abspath(parts.netloc + parts.path if parts.scheme else url))
    return None


def _check_separate(repo: Repository, storage: StorageSettings, media_repository: str | None) -> None:
    logical = _logical(storage.repository)
    if logical is not None and repo.overlaps(logical):
        raise ConfigError(f"{_SETTING}: overlaps the logical backups' repository ({storage.repository}, setting "
                          f"repository): give pgBackRest its own bucket or prefix")
    media = _logical(media_repository) if media_repository else None
    if media is not None and media.kind == "s3" and repo.kind == "s3" and media.bucket == repo.bucket:
        raise ConfigError(f"{_SETTING}: is in the media bucket ({media_repository}, setting "
                          f"cleanup_media_repository), whose orphan cleaner deletes unknown keys: use another bucket")


def _endpoint(storage: StorageSettings) -> tuple[str, int | None, str]:
    """(host, port, region) of the S3 endpoint."""
    opts = storage.s3_options()
    url = opts.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = opts.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if url:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ConfigError(f"r2_endpoint_url: '{url}' must be https://host[:port] (pgBackRest speaks TLS only)")
        return parts.hostname, parts.port, region or "auto"
    if not region:
        raise ConfigError("s3_region: not set (needed for an AWS S3 repository without r2_endpoint_url)")
    return f"s3.{region}.amazonaws.com", None, region


def _s3_options(repo: Repository, pitr: PitrSettings, storage: StorageSettings) -> dict[str, str]:
    host, port, region = _endpoint(storage)
    options = {"repo1-s3-bucket": repo.bucket or "", "repo1-s3-endpoint": host, "repo1-s3-region": region,
               "repo1-s3-uri-style": "path"}
    if port:
        options["repo1-storage-port"] = str(port)
    if not pitr.s3_verify_tls:
        options["repo1-storage-verify-tls"] = "n"
    if pitr.s3_ca_file:
        options["repo1-storage-ca-file"] = pitr.s3_ca_file
    return options


def repository_options(pitr: PitrSettings, storage: StorageSettings, *,
                       media_repository: str | None = None) -> dict[str, str]:
    repo = parse_repository(pitr.repository)
    _check_separate(repo, storage, media_repository)
    options = {"repo1-type": repo.kind, "repo1-path": repo.path}
    if repo.kind == "s3":
        options |= _s3_options(repo, pitr, storage)
    options |= {"repo1-bundle": "y", "repo1-cipher-type": CIPHER_TYPE}
    if pitr.block_incremental:
        options |= {"repo1-block": "y", "beta": "y"}
    return options | map_retention(pitr.keep_weekly, pitr.keep_daily).options()


def _s3_keys(storage: StorageSettings) -> dict[str, str]:
    key = storage.r2_access_key_id.get_secret_value() if storage.r2_access_key_id else os.environ.get(
        "AWS_ACCESS_KEY_ID")
    secret = storage.r2_secret_access_key.get_secret_value() if storage.r2_secret_access_key else os.environ.get(
        "AWS_SECRET_ACCESS_KEY")
    if not key:
        raise ConfigError("r2_access_key_id: not set (pgBackRest needs the S3 keys in its configuration)")
    if not secret:
        raise ConfigError("r2_secret_access_key: not set (pgBackRest needs the S3 keys in its configuration)")
    return {"repo1-s3-key": key, "repo1-s3-key-secret": secret}


def _secrets(options: dict[str, str], storage: StorageSettings, cipher_pass: str | None,
             cipher_block: str) -> dict[str, str]:
    if not cipher_pass:
        raise ConfigError(f"pitr_cipher_pass: not set (CHARHUB_OPS_PITR_CIPHER_PASS, or the Secret block "
                          f"{cipher_block}): the repository is encrypted")
    secrets = {"repo1-cipher-pass": cipher_pass}
    return secrets | (_s3_keys(storage) if options["repo1-type"] == "s3" else {})


def _section(name: str, options: dict[str, str]) -> str:
    for key, value in options.items():
        if "\n" in value or "\r" in value:
            raise ConfigError(f"pgbackrest.conf: the value of {key} contains a line break")
    return f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in options.items())


def render_config(pitr: PitrSettings, storage: StorageSettings, *, pg_port: int, cipher_pass: str | None,
                  pg_user: str | None = None, media_repository: str | None = None) -> str:
    repo = repository_options(pitr, storage, media_repository=media_repository)
    general = {"compress-type": "zst", "compress-level": str(pitr.compress_level),
               "process-max": str(pitr.process_max), "start-fast": "y", "archive-async": "n",
               "io-timeout": str(pitr.io_timeout),
               "log-level-console": "off", "log-level-stderr": "warn", "log-level-file": "off"}
    stanza = {"pg1-path": pitr.pg_path, "pg1-port": str(pg_port), "pg1-socket-path": pitr.socket_path}
    if pg_user:
        stanza["pg1-user"] = pg_user
    head = "# Written by `charhub-ops pitr setup` from the CHARHUB_OPS_PITR_* settings: edit those, not this file.\n"
    return head + _section("global", repo | _secrets(repo, storage, cipher_pass, pitr.cipher_block) | general) \
        + "\n" + _section(pitr.stanza, stanza)
