"""The pgBackRest operations of the ``pitr`` pipeline: setup, backup, expire, info.

``setup(pgb, config_text) -> SetupResult``
    Writes the configuration as a candidate (``<pitr_config_path>.new``), reads the repository with it
    (``info``: passphrase, reachability) and creates the stanza only when ``info`` says it is missing; only
    then does the candidate replace the live file (``archive_command`` reads it: a refused configuration never
    breaks archiving), and ``check`` runs (a WAL switch must reach the repository through PostgreSQL's
    ``archive_command``). Idempotent: a second run writes the same file, finds the stanza and checks again.
``backup(pgb, kind="full") -> BackupInfo``
    ``backup --type=<kind>`` (full | diff | incr; else ``ConfigError`` naming ``--type``), then the new
    backup as ``info`` lists it (pgBackRest makes a full one when a diff/incr has no full to build on).
``expire(pgb, mapping, dry_run=False) -> ExpireResult``
    ``expire`` (with ``--dry-run``: what would go, nothing removed) under ``mapping``'s retention (passed on
    the command line, so what is printed is what runs); the backups and WAL ranges it expired (or would) are
    read from its log lines.
``connect(settings, cipher_pass=None) -> Pitr``
    The wiring from the settings: a ``PgBackRest`` (in ``docker_container`` when set), the configuration text
    ``setup`` writes (port and user from ``database_url``) and the retention mapping.
``info(pgb, *, must_exist=False) -> StanzaInfo``: our stanza (``.exists`` False before setup, unless
    ``must_exist``: then the missing-stanza error).

Every pgBackRest failure is a one-line ``PgBackRestError`` (``command.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from charhub_ops.errors import ConfigError, DatabaseError
from charhub_ops.pgurl import parse_pg_url
from charhub_ops.pitr.command import PgBackRest
from charhub_ops.pitr.config import render_config
from charhub_ops.pitr.info import BackupInfo, StanzaInfo
from charhub_ops.pitr.retention import RetentionMapping, map_retention
from charhub_ops.settings import Settings

__all__ = ["BACKUP_KINDS", "Pitr", "SetupResult", "ExpireResult", "connect", "setup", "backup", "expire", "info",
           "backup_summary", "stanza_summary"]

BACKUP_KINDS = ("full", "diff", "incr")
_LABEL = r"\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?"
_EXPIRED = re.compile(r"expire (?:full|diff|incr) backup(?: set)?:? (" + _LABEL + r"(?:, " + _LABEL + r")*)")
_ARCHIVE = re.compile(r"remove archive, start = (\w+), stop = (\w+)")


@dataclass(frozen=True)
class SetupResult:
    stanza: str
    config_path: str
    created: bool  # the stanza was created by this run (False: it already existed)
    checked: bool  # `check` passed: the configuration works and WAL reaches the repository


@dataclass(frozen=True)
class ExpireResult:
    dry_run: bool
    expired: tuple[str, ...]  # backup labels expired (or that would be)
    archive_ranges: tuple[tuple[str, str], ...]  # WAL ranges removed (or that would be)
    mapping: RetentionMapping


@dataclass(frozen=True)
class Pitr:
    pgb: PgBackRest
    mapping: RetentionMapping
    settings: Settings
    cipher_pass: str | None

    def config_text(self) -> str:
        """The pgbackrest.conf for these settings (contains secrets: never log it)."""
        s = self.settings
        if s.database.database_url is None:
            raise ConfigError("database_url: not set (pgBackRest's pg1-port and pg1-user come from it)")
        url = parse_pg_url(s.database.database_url.get_secret_value())
        port = int((url.params.get("port") or "5432").split(",")[0])
        return render_config(s.pitr, s.storage, pg_port=port, cipher_pass=self.cipher_pass,
                             pg_user=url.params.get("user"), media_repository=s.cleanup.media_repository)


def connect(settings: Settings, cipher_pass: str | None = None, client=None) -> Pitr:
    """``cipher_pass``: the passphrase when the caller resolved it (a Secret block); else the setting."""
    if cipher_pass is None and settings.pitr.cipher_pass is not None:
        cipher_pass = settings.pitr.cipher_pass.get_secret_value()
    pgb = PgBackRest(settings.pitr, container=settings.database.docker_container, client=client,
                     secrets=settings.secret_values(cipher_pass))
    mapping = map_retention(settings.pitr.keep_weekly, settings.pitr.keep_daily)
    return Pitr(pgb=pgb, mapping=mapping, settings=settings, cipher_pass=cipher_pass)


_MISSING = "ERROR: [055]: unable to load info file: the stanza is missing (stanza-create)"


def info(pgb: PgBackRest, *, must_exist: bool = False) -> StanzaInfo:
    """Our stanza; ``must_exist``: a missing stanza raises the one-line missing-stanza error."""
    stanza = pgb.info()
    if must_exist and not stanza.exists:
        raise pgb.fail("info", _MISSING)
    return stanza


def setup(pgb: PgBackRest, config_text: str) -> SetupResult:
    candidate = pgb.with_config(pgb.config_path + ".new")
    candidate.install_config(config_text)
    try:
        created = not candidate.info().exists  # passphrase, reachability, repository: before it goes live
        if created:
            candidate.run("stanza-create")
    finally:
        candidate.remove_config()
    pgb.install_config(config_text)
    pgb.run("check")
    return SetupResult(stanza=pgb.pitr.stanza, config_path=pgb.config_path, created=created, checked=True)


def backup(pgb: PgBackRest, kind: str = "full") -> BackupInfo:
    if kind not in BACKUP_KINDS:
        raise ConfigError(f"--type: '{kind}' is not one of {', '.join(BACKUP_KINDS)}")
    before = pgb.info()
    if not before.exists:
        raise pgb.fail("backup", _MISSING)
    known = {b.label for b in before.backups}
    pgb.run("backup", f"--type={kind}")
    new = [b for b in pgb.info().backups if b.label not in known]
    if not new:
        raise DatabaseError(f"pgbackrest backup: finished, but info lists no new backup of stanza {pgb.pitr.stanza}")
    return max(new, key=lambda b: b.stop)


def expire(pgb: PgBackRest, mapping: RetentionMapping, dry_run: bool = False) -> ExpireResult:
    if not pgb.info().exists:
        raise pgb.fail("expire", _MISSING)
    options = ["--log-level-console=info", *(f"--{k}={v}" for k, v in mapping.options().items())]
    options += ["--dry-run"] if dry_run else []
    log = pgb.run("expire", *options)
    expired = [label for m in _EXPIRED.finditer(log) for label in m.group(1).split(", ")]
    return ExpireResult(dry_run=dry_run, expired=tuple(dict.fromkeys(expired)),
                        archive_ranges=tuple(_ARCHIVE.findall(log)), mapping=mapping)


def backup_summary(b: BackupInfo) -> dict:
    """One backup as JSON-ready data (``pitr info --json``, artifacts)."""
    return {"label": b.label, "type": b.type, "start": b.start.isoformat(), "stop": b.stop.isoformat(),
            "seconds": b.seconds, "size_bytes": b.size, "delta_bytes": b.delta, "repo_size_bytes": b.repo_size,
            "repo_delta_bytes": b.repo_delta, "wal_start": b.wal_start, "wal_stop": b.wal_stop, "prior": b.prior,
            "error": b.error}


def stanza_summary(s: StanzaInfo) -> dict:
    """The stanza as JSON-ready data: status, WAL range archived, backups oldest first."""
    return {"stanza": s.name, "exists": s.exists, "status_code": s.status_code, "status": s.status_message,
            "cipher": s.cipher, "wal_min": s.wal_min, "wal_max": s.wal_max, "backup_running": s.backup_running,
            "backups": [backup_summary(b) for b in sorted(s.backups, key=lambda b: b.start)]}
