"""Resolving a run's configuration: settings + flow parameters + Prefect Secret blocks."""

from __future__ import annotations

from prefect import task
from prefect.blocks.system import Secret
from prefect.cache_policies import NONE
from pydantic import BaseModel

from charhub_ops.errors import ConfigError
from charhub_ops.pgurl import PgUrl, parse_pg_url
from charhub_ops.settings import Settings, load_settings
from charhub_ops.storage import S3Options, open_storage
from charhub_ops.streams import parse_recipients
from tasks.common import RepoSpec

__all__ = ["BackupConfig", "resolve_backup_config", "repo_spec", "database_url"]


class BackupConfig(BaseModel):
    model_config = {"arbitrary_types_allowed": True}

    repo: RepoSpec
    url: PgUrl
    container: str | None
    recipients: list[str]
    zstd_level: int
    zstd_threads: int
    hash_limit: int
    parallel: int
    anomaly_low: float
    anomaly_high: float


def repo_spec(settings: Settings) -> RepoSpec:
    """The repository of ``settings`` with its URL made absolute (file://./x → file:///abs/x)."""
    s3 = S3Options.from_settings(settings)
    storage = open_storage(settings.repository, s3)  # validates the scheme, bucket and credentials
    return RepoSpec(url=storage.url, s3=s3)


def database_url(settings: Settings, secret_block: str | None = None) -> PgUrl:
    if secret_block:
        try:
            value = Secret.load(secret_block).get()
        except ValueError as exc:
            raise ConfigError(f"database_url_secret: no Prefect Secret block named '{secret_block}'") from exc
        return parse_pg_url(str(value), setting=f"Secret block '{secret_block}'")
    if settings.database_url is None:
        raise ConfigError("database_url: not set (set DATABASE_URL or CHARHUB_OPS_DATABASE_URL, "
                          "or pass --database-url)")
    return parse_pg_url(settings.database_url.get_secret_value())


@task(name="resolve-config", cache_policy=NONE)
def resolve_backup_config(repository: str | None, docker_container: str | None, encrypt_to: list[str] | None,
                          database_url_secret: str | None) -> BackupConfig:
    """Settings from the environment, overridden by the run's parameters; validated before any work."""
    settings = load_settings(repository=repository, docker_container=docker_container,
                             encrypt_to=encrypt_to or None)
    parse_recipients(settings.encrypt_to)
    return BackupConfig(
        repo=repo_spec(settings), url=database_url(settings, database_url_secret),
        container=settings.docker_container, recipients=settings.encrypt_to, zstd_level=settings.zstd_level,
        zstd_threads=settings.zstd_threads, hash_limit=settings.hash_limit_mib * 1024 * 1024,
        parallel=settings.parallel_databases,
        anomaly_low=settings.anomaly_low, anomaly_high=settings.anomaly_high,
    )


