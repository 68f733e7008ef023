"""Prefect tasks of the pgBackRest flows (flows/pitr.py): thin wrappers of :mod:`charhub_ops.pitr`.

Configuration (:func:`resolve_pitr_config`): the run's ``pitr``/``storage`` settings, where pgBackRest runs (the
database container, else this host) and the port of the database URL (setting or Secret block); the repository
passphrase only where a step writes pgBackRest's configuration (setup): ``CHARHUB_OPS_PITR_CIPHER_PASS``, else the
Secret block ``pitr_cipher_block``. It travels as a ``SecretStr`` and reaches pgBackRest only through the config file
or its environment (the core's contract), never a command line, a log, an artifact or an event.

Lock: every step that runs pgBackRest against the stanza's repository (backup, expire, restore, verify) holds the
global concurrency limit ``pitr-<stanza>`` (tasks/locks.py), so our own runs take turns instead of failing on
pgBackRest's own stanza lock ("unable to acquire lock"). They do not take ``postgres-<db>``: a physical backup
copies files and holds no lock inside PostgreSQL, so it is safe beside a pg_dump, a restore drill or a migration,
and holding every database's slot for the length of a full backup would delay the nightly logical backup behind
it. The two share the disk and CPU instead: the schedules keep them an hour apart (prefect.yaml).

Retries: only transient errors (tasks.common.RETRY); pgBackRest's classification is the core's.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import NONE
from pydantic import BaseModel, SecretStr

from charhub_ops.errors import ConfigError
from charhub_ops.pitr import ops
from charhub_ops.pitr.command import PgBackRest
from charhub_ops.pitr.info import BackupInfo, StanzaInfo
from charhub_ops.pitr.retention import RetentionMapping, map_retention
from charhub_ops.settings import PitrSettings, Settings, StorageSettings
from tasks.common import RETRY, database_url
from tasks.locks import resource_lock

__all__ = ["PitrConfig", "resolve_pitr_config", "cipher_pass", "pitr_info", "pitr_setup", "pitr_backup",
           "pitr_expire", "retention_mapping", "pitr_artifact", "stanza_lock"]


class PitrConfig(BaseModel):
    """Everything a pgBackRest step needs (the passphrase only when asked for)."""

    model_config = {"arbitrary_types_allowed": True}

    pitr: PitrSettings
    storage: StorageSettings
    container: str | None
    pg_port: int
    production: bool
    cipher_pass: SecretStr | None = None

    @property
    def repository(self) -> str:
        return self.pitr.repository or ""

    @property
    def stanza(self) -> str:
        return self.pitr.stanza

    def runner(self) -> PgBackRest:
        return PgBackRest(self.pitr, container=self.container)


def cipher_pass(pitr: PitrSettings) -> SecretStr | None:
    """The repository passphrase: the setting, else the Secret block ``pitr_cipher_block``, else None."""
    if pitr.cipher_pass is not None:
        return pitr.cipher_pass
    try:
        value = Secret.load(pitr.cipher_block).get()
    except ValueError:  # no such block
        return None
    return SecretStr(str(value))


@task(name="resolve-pitr-config", cache_policy=NONE)
def resolve_pitr_config(settings: Settings, database_url_secret: str | None = None,
                        with_cipher: bool = False) -> PitrConfig:
    """The run's settings (read by the flow) checked before any work: the repository is set, the database URL
    (setting or Secret block) gives the port pgBackRest connects to; the passphrase with ``with_cipher``."""
    if not settings.pitr.repository:
        raise ConfigError("pitr_repository: not set (CHARHUB_OPS_PITR_REPOSITORY=s3://bucket/prefix or "
                          "file:///path)")
    url = database_url(settings.database, database_url_secret)
    port = int((url.params.get("port") or "5432").split(",")[0])
    return PitrConfig(pitr=settings.pitr, storage=settings.storage, container=settings.database.docker_container,
                      pg_port=port, production=settings.database.production,
                      cipher_pass=cipher_pass(settings.pitr) if with_cipher else None)


def stanza_lock(cfg: PitrConfig):
    """The one slot of ``pitr-<stanza>`` (see the module docstring)."""
    return resource_lock("pitr", cfg.stanza)


@task(name="pitr-info", cache_policy=NONE, **RETRY)
def pitr_info(cfg: PitrConfig) -> StanzaInfo:
    """pgBackRest ``info --output=json`` of the stanza (read only)."""
    return cfg.runner().info()


@task(name="pitr-setup", cache_policy=NONE, **RETRY)
def pitr_setup(cfg: PitrConfig) -> ops.SetupResult:
    """Install the configuration, create the stanza when missing, check archiving (idempotent)."""
    with stanza_lock(cfg):
        return ops.setup(cfg.runner(), cfg.pitr, cfg.storage, pg_port=cfg.pg_port,
                         cipher_pass=cfg.cipher_pass.get_secret_value() if cfg.cipher_pass else None)


@task(name="pitr-backup", cache_policy=NONE, **RETRY)
def pitr_backup(cfg: PitrConfig, kind: str) -> BackupInfo:
    """One pgBackRest backup of ``kind`` (full | diff | incr) under ``pitr-<stanza>``; returns its info."""
    with stanza_lock(cfg):
        backup = ops.backup(cfg.runner(), kind)
    get_run_logger().info("%s backup %s: %d bytes of cluster, %d copied, %.1f s", backup.type, backup.label,
                          backup.size, backup.delta, backup.seconds)
    return backup


def retention_mapping(pitr: PitrSettings) -> RetentionMapping:
    """keep_weekly / keep_daily → pgBackRest ``repo1-retention-*`` options (what expire applies), logged."""
    mapping = map_retention(pitr.keep_weekly, pitr.keep_daily)
    for line in mapping.explanation:
        get_run_logger().info("%s", line)
    return mapping


@task(name="pitr-expire", cache_policy=NONE, **RETRY)
def pitr_expire(cfg: PitrConfig, dry_run: bool) -> ops.ExpireResult:
    """pgBackRest ``expire`` with the retention mapping (``--dry-run`` with ``dry_run``) under ``pitr-<stanza>``."""
    with stanza_lock(cfg):
        return ops.expire(cfg.runner(), cfg.pitr, dry_run=dry_run)


@task(name="pitr-artifact", cache_policy=NONE)
def pitr_artifact(key: str, markdown: str, description: str) -> str:
    """A markdown artifact (a run's report)."""
    create_markdown_artifact(markdown, key=key, description=description)
    return markdown
