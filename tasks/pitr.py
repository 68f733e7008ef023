"""Prefect tasks of the pgBackRest flows (flows/pitr.py, flows/pitr_restore.py): thin wrappers of charhub_ops.pitr.

Configuration (:func:`resolve_pitr_config`): the run's settings (where pgBackRest runs: the database container,
else this host; the database URL of a Secret block replaces the setting) and the repository passphrase:
``CHARHUB_OPS_PITR_CIPHER_PASS``, else the Secret block ``pitr_cipher_block``, else none. Only setup writes it
(into pgBackRest's configuration file, the core's contract); the other steps pass it to the core so that it is
masked in every message. It travels as a ``SecretStr``: never a command line, a log, an artifact or an event.

Lock: every step that runs pgBackRest against the stanza's repository (backup, expire, restore, verify) holds the
global concurrency limit ``pitr-<stanza>`` (tasks/locks.py), so our own runs take turns instead of failing on
pgBackRest's own stanza lock ("unable to acquire lock"). They do not take ``postgres-<db>``: a physical backup
copies files and holds no lock inside PostgreSQL, so it is safe beside a pg_dump, a restore drill or a migration,
and holding every database's slot for the length of a full backup would delay the nightly logical backup behind
it. The two share the disk and CPU instead: the schedules keep them an hour apart (prefect.yaml). recover-table
is the exception: it writes a new table into a live database, so it also holds that database's ``postgres-<db>``.

Retries: only transient errors (tasks.common.RETRY); pgBackRest's classification is the core's.
"""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import NONE
from pydantic import BaseModel, SecretStr

from charhub_ops.errors import ConfigError
from charhub_ops.pgurl import PgUrl
from charhub_ops.pitr import ops
from charhub_ops.pitr.info import BackupInfo, StanzaInfo
from charhub_ops.pitr.recover import RecoverPlan, RecoverResult, plan_recovery, recover_table
from charhub_ops.pitr.restore import RestoreResult, Target, restore_into
from charhub_ops.pitr.verify import VerifyResult, verify
from charhub_ops.postgres import open_session
from charhub_ops.settings import PitrSettings, Settings
from tasks.common import RETRY, database_url
from tasks.locks import database_lock, resource_lock

__all__ = ["PitrConfig", "resolve_pitr_config", "cipher_pass", "pitr_info", "pitr_setup", "pitr_backup",
           "pitr_expire", "pitr_artifact", "stanza_lock", "live_url", "pitr_verify", "pitr_restore",
           "plan_recover_table", "recover_one_table"]


class PitrConfig(BaseModel):
    """The run's settings (the database URL of a Secret block already in them) and the passphrase."""

    model_config = {"arbitrary_types_allowed": True}

    settings: Settings
    cipher_pass: SecretStr | None = None

    @property
    def repository(self) -> str:
        return self.settings.pitr.repository or ""

    @property
    def stanza(self) -> str:
        return self.settings.pitr.stanza

    @property
    def production(self) -> bool:
        return self.settings.database.production

    def connect(self) -> ops.Pitr:
        """pgBackRest wired for these settings (the passphrase, when known, is masked in its messages)."""
        return ops.connect(self.settings, self.cipher_pass.get_secret_value() if self.cipher_pass else None)


def cipher_pass(pitr: PitrSettings) -> SecretStr | None:
    """The repository passphrase: the setting, else (unset or empty, as the CLI reads it) the Secret block
    ``pitr_cipher_block``, else None."""
    if pitr.cipher_pass is not None and pitr.cipher_pass.get_secret_value():
        return pitr.cipher_pass
    try:
        value = Secret.load(pitr.cipher_block).get()
    except ValueError:  # no such block
        return None
    return SecretStr(str(value))


@task(name="resolve-pitr-config", cache_policy=NONE)
def resolve_pitr_config(settings: Settings, database_url_secret: str | None = None) -> PitrConfig:
    """The run's settings (read by the flow) checked before any work: the repository is set; the database URL
    of the Secret block ``database_url_secret`` (if given) replaces the setting; the passphrase is read."""
    if not settings.pitr.repository:
        raise ConfigError("pitr_repository: not set (CHARHUB_OPS_PITR_REPOSITORY=s3://bucket/prefix or "
                          "file:///path)")
    if database_url_secret:
        url = database_url(settings.database, database_url_secret)
        database = settings.database.model_copy(update={"database_url": SecretStr(url.conninfo)})
        settings = settings.model_copy(update={"database": database})
    return PitrConfig(settings=settings, cipher_pass=cipher_pass(settings.pitr))


def stanza_lock(cfg: PitrConfig):
    """The one slot of ``pitr-<stanza>`` (see the module docstring)."""
    return resource_lock("pitr", cfg.stanza)


@task(name="pitr-info", cache_policy=NONE, **RETRY)
def pitr_info(cfg: PitrConfig) -> StanzaInfo:
    """pgBackRest ``info --output=json`` of the stanza (read only)."""
    return ops.info(cfg.connect().pgb)


@task(name="pitr-setup", cache_policy=NONE, **RETRY)
def pitr_setup(cfg: PitrConfig) -> ops.SetupResult:
    """Install the configuration, create the stanza when missing, check archiving (idempotent)."""
    pitr = cfg.connect()
    with stanza_lock(cfg):
        return ops.setup(pitr.pgb, pitr.config_text())


@task(name="pitr-backup", cache_policy=NONE, **RETRY)
def pitr_backup(cfg: PitrConfig, kind: str) -> tuple[BackupInfo, StanzaInfo]:
    """One pgBackRest backup of ``kind`` (full | diff | incr) under ``pitr-<stanza>``; returns it and the stanza's
    ``info`` right after (the repository's totals). A missing stanza fails with the core's line naming setup."""
    pgb = cfg.connect().pgb
    with stanza_lock(cfg):
        backup = ops.backup(pgb, kind)
    get_run_logger().info("%s backup %s: %d bytes of cluster, %d copied, %.1f s", backup.type, backup.label,
                          backup.size, backup.delta, backup.seconds)
    return backup, ops.info(pgb)


@task(name="pitr-expire", cache_policy=NONE, **RETRY)
def pitr_expire(cfg: PitrConfig, dry_run: bool) -> ops.ExpireResult:
    """pgBackRest ``expire`` with the retention mapping (``--dry-run`` with ``dry_run``) under ``pitr-<stanza>``;
    the mapping's explanation goes to the run's log first."""
    pitr = cfg.connect()
    for line in pitr.mapping.explanation:
        get_run_logger().info("%s", line)
    with stanza_lock(cfg):
        return ops.expire(pitr.pgb, pitr.mapping, dry_run=dry_run)


@task(name="pitr-artifact", cache_policy=NONE)
def pitr_artifact(key: str, markdown: str, description: str) -> str:
    """A markdown artifact (a run's report)."""
    create_markdown_artifact(markdown, key=key, description=description)
    return markdown


# --- restores and drills (charhub_ops.pitr.restore / verify / recover) ------------------------------------------

def live_url(cfg: PitrConfig) -> PgUrl:
    """The live database's URL (the setting, or the Secret block's that resolve put in its place)."""
    return database_url(cfg.settings.database)


@task(name="pitr-verify", cache_policy=NONE, **RETRY)
def pitr_verify(cfg: PitrConfig) -> VerifyResult:
    """The physical drill (restore point → scratch instance → row counts and hashes) under ``pitr-<stanza>``:
    an expire cannot remove the backup it restores from meanwhile."""
    s = cfg.settings
    with stanza_lock(cfg):
        return verify(cfg.connect().pgb, live_url(cfg), hash_limit_bytes=s.backup.hash_limit_mib << 20,
                      work_dir=s.runs.work_dir)


@task(name="pitr-restore", cache_policy=NONE, **RETRY)
def pitr_restore(cfg: PitrConfig, target: Target, into: str) -> RestoreResult:
    """Restore ``target`` into the NEW directory (or container volume) ``into``, never the live one."""
    with stanza_lock(cfg):
        return restore_into(cfg.connect().pgb, target, into)


@task(name="plan-recover-table", cache_policy=NONE, **RETRY)
def plan_recover_table(cfg: PitrConfig, table: str, at: datetime | None, database: str | None) -> RecoverPlan:
    """Checks before anything is restored (the schema exists, the new name is free); reads only."""
    url = live_url(cfg)
    url = url.with_dbname(database) if database else url
    with open_session(url, cfg.settings.database.docker_container) as session:
        return plan_recovery(session, table, at, url.dbname)


@task(name="recover-table", cache_policy=NONE)
def recover_one_table(cfg: PitrConfig, plan: RecoverPlan) -> RecoverResult:
    """Restore at the plan's time into a scratch instance and copy the table in as a NEW table, holding
    ``pitr-<stanza>`` and the database's slot ``postgres-<db>`` (it writes into the live database). Not retried:
    a second attempt would find its own new table."""
    with stanza_lock(cfg), database_lock(plan.database):
        return recover_table(cfg.connect().pgb, plan, live_url(cfg), work_dir=cfg.settings.runs.work_dir)
