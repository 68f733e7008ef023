"""All settings of charhub-ops, grouped by pipeline (pydantic-settings).

Read from the environment and ``.env``; every group reads its own variables (``base.Group``), so the
names are the ones documented in docs/configuration.md (generated from the descriptions here by
``scripts/gen_config_docs.py``) and CharHub's own names such as ``DATABASE_URL`` and ``R2_*`` are
accepted as they are. A flow reads the settings once (:func:`load_settings`, with its parameters as
overrides) and passes the groups, or the options objects they turn themselves into
(``storage.s3_options()``, ``cleanup.row_options()``, ``migrate.runner_options()``,
``retention.policy()``), down to its tasks. Every secret is a ``SecretStr``: its repr is ``**********``.

=============  =====================================================================================
group          settings
=============  =====================================================================================
database       database_url, docker_container, production
storage        repository, r2_*, s3_*, part_size_mib, upload_concurrency
runs           notify_block, task_retries, task_retry_delay, lock_lease_seconds, approval_poll_*, work_dir
backup         encrypt_to, zstd_*, hash_limit_mib, parallel_databases, anomaly_*
retention      keep_*, min_keep
restore        age_identity_file, restore_jobs, restore_mode, app_containers
migrate        migrate_*
pitr           pitr_*
cleanup        cleanup_*
monitor        monitor_config, monitor_state
capacity       capacity_*
deploy         deploy_*
bootstrap      *_block, scratch_url, notify_url (setup only)
=============  =====================================================================================
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from charhub_ops.errors import ConfigError
from charhub_ops.settings.base import PREFIX, Group
from charhub_ops.settings.operations import CapacitySettings, CleanupSettings, DeploySettings, MonitorSettings
from charhub_ops.settings.pipelines import (
    BackupSettings,
    MigrateSettings,
    PitrSettings,
    RestoreSettings,
    RetentionSettings,
)
from charhub_ops.settings.shared import (
    BootstrapSettings,
    DatabaseSettings,
    RunSettings,
    StorageSettings,
    endpoint_url_problem,
)

__all__ = ["Settings", "GROUPS", "load_settings", "load_group", "env_name", "endpoint_url_problem", "Group",
           "DatabaseSettings", "StorageSettings", "RunSettings", "BootstrapSettings", "BackupSettings",
           "RetentionSettings", "RestoreSettings", "MigrateSettings", "CleanupSettings", "MonitorSettings",
           "CapacitySettings", "DeploySettings", "PitrSettings"]

# attribute of Settings → group class, in the order docs/configuration.md lists them
GROUPS: dict[str, type[Group]] = {
    "database": DatabaseSettings, "storage": StorageSettings, "runs": RunSettings, "backup": BackupSettings,
    "retention": RetentionSettings, "restore": RestoreSettings, "migrate": MigrateSettings,
    "pitr": PitrSettings, "cleanup": CleanupSettings, "monitor": MonitorSettings, "capacity": CapacitySettings,
    "deploy": DeploySettings, "bootstrap": BootstrapSettings,
}
# setting name (``cleanup_lock_timeout``) → (group attribute, field)
_WHERE = {cls.setting_name(field): (attr, field) for attr, cls in GROUPS.items() for field in cls.model_fields}


class Settings(BaseModel):
    """The settings of one run, one group per pipeline or shared system."""

    model_config = ConfigDict(frozen=True)

    database: DatabaseSettings
    storage: StorageSettings
    runs: RunSettings
    backup: BackupSettings
    retention: RetentionSettings
    restore: RestoreSettings
    migrate: MigrateSettings
    pitr: PitrSettings
    cleanup: CleanupSettings
    monitor: MonitorSettings
    capacity: CapacitySettings
    deploy: DeploySettings
    bootstrap: BootstrapSettings

    def secret_values(self, *extra: str | None) -> list[str]:
        """The plain text of every secret set and of ``extra``, plus the password inside each PostgreSQL URL
        among them (messages show it decoded, outside its URL): what scrubbing removes from text."""
        from charhub_ops.pgurl import parse_pg_url

        values = [value.get_secret_value() for attr in GROUPS for value in dict(getattr(self, attr)).values()
                  if isinstance(value, SecretStr)] + [e for e in extra if e]
        for value in list(values):
            if "://" in value:
                try:
                    values.append(parse_pg_url(value).params.get("password", ""))
                except Exception:  # noqa: BLE001 - not a PostgreSQL URL: nothing more to hide
                    pass
        return [v for v in values if v]


def env_name(setting: str) -> str:
    """The environment variable that sets ``setting`` (for error messages)."""
    return PREFIX + setting.upper()


def _problems(cls: type[Group], exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "settings"
        name = field.lower().removeprefix(PREFIX.lower())
        name = cls.setting_name(name) if name in cls.model_fields else name
        out.append(f"{name} ({env_name(name)}): {err['msg'].removeprefix('Value error, ')}")
    return out


def load_group(attr: str, **overrides: object) -> Group:
    """One group read from the environment/.env (``overrides`` by field name; None = not given)."""
    cls = GROUPS[attr]
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError("invalid settings: " + "; ".join(_problems(cls, exc))) from None


def load_settings(**overrides: object) -> Settings:
    """Every group from the environment/.env plus explicit overrides by setting name (``repository=…``,
    ``cleanup_policy_file=…``; None = not given).

    Raises ConfigError naming every offending setting and its variable; never echoes a secret value.
    """
    unknown = sorted(set(overrides) - set(_WHERE))
    if unknown:
        raise TypeError(f"load_settings: unknown setting(s) {', '.join(unknown)}")
    given: dict[str, dict[str, object]] = {attr: {} for attr in GROUPS}
    for name, value in overrides.items():
        if value is not None:
            attr, field = _WHERE[name]
            given[attr][field] = value
    groups, problems = {}, []
    for attr, cls in GROUPS.items():
        try:
            groups[attr] = cls(**given[attr])
        except ValidationError as exc:
            problems += _problems(cls, exc)
    if problems:
        raise ConfigError("invalid settings: " + "; ".join(problems))
    return Settings(**groups)
