"""All settings of charhub-ops in one pydantic-settings model.

Read from the environment and ``.env`` (prefix ``CHARHUB_OPS_``; CharHub's own names such as
``DATABASE_URL`` and ``R2_*`` are accepted as they are). Build it once at the entry point with
:func:`load_settings`; pass explicit values to tasks, never the settings object itself.
Every secret is a ``SecretStr``: its repr is ``**********``.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from charhub_ops.errors import ConfigError

__all__ = ["Settings", "load_settings", "env_name", "endpoint_url_problem"]

PREFIX = "CHARHUB_OPS_"
BLOCK_NAME = "^[a-z0-9][a-z0-9-]*$"  # Prefect block document names


def _aliases(name: str, *extra: str) -> AliasChoices:
    return AliasChoices(PREFIX + name.upper(), *extra)


class Settings(BaseSettings):
    """Configuration table (the README lists the same fields)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: SecretStr | None = Field(
        None, validation_alias=_aliases("database_url", "DATABASE_URL"),
        description="PostgreSQL URL to back up (Prisma form accepted). With docker_container: as seen inside it.",
    )
    repository: str = Field(
        "file://./backups", validation_alias=_aliases("repository"),
        description="Where backups live: s3://bucket/prefix (S3 or R2) or file:///path.",
    )
    docker_container: str | None = Field(
        None, validation_alias=_aliases("docker_container"),
        description="Run pg_dump inside this container through the Docker API (CharHub: charhub-postgres-1).",
    )
    encrypt_to: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_aliases("encrypt_to"),
        description="age public keys (age1…), comma-separated; backups and deploy records are encrypted to "
                    "all of them.",
    )
    age_identity_file: str | None = Field(
        None, validation_alias=_aliases("age_identity_file"),
        description="age identity file used to decrypt backups (restore/verify) and deploy records (rollback).",
    )
    r2_account_id: str | None = Field(None, validation_alias=_aliases("r2_account_id", "R2_ACCOUNT_ID"))
    r2_endpoint_url: str | None = Field(None, validation_alias=_aliases("r2_endpoint_url", "R2_ENDPOINT_URL"))
    r2_access_key_id: SecretStr | None = Field(
        None, validation_alias=_aliases("r2_access_key_id", "R2_ACCESS_KEY_ID"))
    r2_secret_access_key: SecretStr | None = Field(
        None, validation_alias=_aliases("r2_secret_access_key", "R2_SECRET_ACCESS_KEY"))
    s3_region: str | None = Field(
        None, validation_alias=_aliases("s3_region"),
        description="Region for S3; 'auto' is used for R2 when unset.")
    part_size_mib: int = Field(
        8, ge=5, le=5120, validation_alias=_aliases("part_size_mib"),
        description="Smallest multipart part size; grown from the expected size so 10,000 parts suffice.")
    upload_concurrency: int = Field(4, ge=1, le=32, validation_alias=_aliases("upload_concurrency"))
    s3_timeout: float = Field(
        60.0, gt=0, le=3600, validation_alias=_aliases("s3_timeout"),
        description="Seconds to connect to S3/R2 and to wait for each answer; a stalled request is retried.")
    s3_max_attempts: int = Field(
        5, ge=1, le=20, validation_alias=_aliases("s3_max_attempts"),
        description="Attempts per S3/R2 request (botocore retries of timeouts, 5xx and throttling).")
    zstd_level: int = Field(3, ge=1, le=19, validation_alias=_aliases("zstd_level"))
    zstd_threads: int = Field(
        0, ge=0, le=64, validation_alias=_aliases("zstd_threads"),
        description="zstd worker threads; 0 = one per CPU.")
    hash_limit_mib: int = Field(
        32, ge=0, le=1024, validation_alias=_aliases("hash_limit_mib"),
        description="Tables up to this size get a content hash in the manifest (checked by restore drills).")
    parallel_databases: int = Field(
        2, ge=1, le=16, validation_alias=_aliases("parallel_databases"),
        description="With --all: size of the 'charhub-ops-backup' concurrency limit.")
    anomaly_low: float = Field(0.5, gt=0, validation_alias=_aliases("anomaly_low"))
    anomaly_high: float = Field(2.0, gt=1, validation_alias=_aliases("anomaly_high"))
    task_retries: int = Field(
        2, ge=0, le=3, validation_alias=_aliases("task_retries"),
        description="Retries of a task failing on a transient error (network, 5xx, throttling, "
                    "serialization failure, lock timeout), with backoff.")
    task_retry_delay: float = Field(
        30.0, ge=0, le=3600, validation_alias=_aliases("task_retry_delay"),
        description="Seconds before the first retry; later retries wait 4x and 10x as long.")
    lock_lease_seconds: float = Field(
        300.0, ge=60, le=86400, validation_alias=_aliases("lock_lease_seconds"),
        description="Lease of a held lock (postgres-<db>), renewed every quarter: a Prefect API outage shorter "
                    "than three quarters of it never lets another run in.")
    restore_jobs: int = Field(
        0, ge=0, le=32, validation_alias=_aliases("restore_jobs"),
        description="pg_restore -j workers for a local dump file; 0 = min(4, CPUs).")
    restore_mode: str = Field(
        "auto", pattern="^(auto|stream|file)$", validation_alias=_aliases("restore_mode"),
        description="stream: GET → checks → pg_restore stdin into the new database, no work-dir space; file: "
                    "the verified dump to the work dir, then pg_restore -j; auto: file only with ≥ 2 local "
                    "pg_restore jobs and room for the dump.")
    work_dir: str | None = Field(
        None, validation_alias=_aliases("work_dir"),
        description="Where restores download and decompress a dump (default: the system temp dir).")
    app_containers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_aliases("app_containers"),
        description="Containers stopped during restore --replace, comma-separated (CharHub: charhub-backend-1).")
    production: bool = Field(
        False, validation_alias=_aliases("production"),
        description="The target is production: --replace needs approval in the UI (or --yes on the CLI).")
    notify_block: str | None = Field(
        None, validation_alias=_aliases("notify_block"),
        description="Name of a Prefect notification block (Slack, Discord, webhook) told about failures.")
    keep_last: int | None = Field(
        None, ge=-1, validation_alias=_aliases("keep_last"),
        description="Retention: keep the newest n backups (-1 = all, 0/unset = rule off).")
    keep_hourly: int | None = Field(
        None, ge=-1, validation_alias=_aliases("keep_hourly"),
        description="Retention: keep the newest backup of each of the last n hours that have one.")
    keep_daily: int | None = Field(
        7, ge=-1, validation_alias=_aliases("keep_daily"),
        description="Retention: keep the newest backup of each of the last n days that have one.")
    keep_weekly: int | None = Field(
        4, ge=-1, validation_alias=_aliases("keep_weekly"),
        description="Retention: keep the newest backup of each of the last n ISO weeks that have one.")
    keep_monthly: int | None = Field(
        6, ge=-1, validation_alias=_aliases("keep_monthly"),
        description="Retention: keep the newest backup of each of the last n months that have one.")
    keep_yearly: int | None = Field(
        None, ge=-1, validation_alias=_aliases("keep_yearly"),
        description="Retention: keep the newest backup of each of the last n years that have one.")
    keep_within: str | None = Field(
        None, validation_alias=_aliases("keep_within"),
        description="Retention: keep every backup within this duration of the newest (7d, 2w, 1y6m, 36h).")
    min_keep: int = Field(
        3, ge=0, validation_alias=_aliases("min_keep"),
        description="Retention: never keep fewer complete backups of a database than this.")

    # --- migrations (charhub-ops migrate) ---
    migrate_lock_wait: float = Field(
        60.0, ge=0, le=3600, validation_alias=_aliases("migrate_lock_wait"),
        description="Migrate: seconds to wait for Prisma's migration lock (advisory lock 72707369).")
    migrate_lock_timeout: float = Field(
        5.0, gt=0, le=600, validation_alias=_aliases("migrate_lock_timeout"),
        description="Migrate: longest lock_timeout (s) of a migration; attempts start at 0.1 s and grow to it.")
    migrate_lock_retries: int = Field(
        10, ge=1, le=100, validation_alias=_aliases("migrate_lock_retries"),
        description="Migrate: attempts of a migration that hits lock timeouts (rolled back each time).")
    migrate_statement_timeout: float = Field(
        900.0, ge=0, validation_alias=_aliases("migrate_statement_timeout"),
        description="Migrate: statement_timeout (s) of each migration; 0 = none.")
    migrate_concurrent_timeout: float = Field(
        3600.0, ge=0, validation_alias=_aliases("migrate_concurrent_timeout"),
        description="Migrate: statement_timeout (s) of a CONCURRENTLY migration, which runs without lock_timeout "
                    "(it waits for older transactions); 0 = none.")
    migrate_big_table_rows: int = Field(
        100_000, ge=0, validation_alias=_aliases("migrate_big_table_rows"),
        description="Migrate lint: lock/rewrite rules on tables with at least this many rows block the run "
                    "unless accepted (--accept RULE[:migration]).")
    migrate_big_table_bytes: int = Field(
        1 << 30, ge=0, validation_alias=_aliases("migrate_big_table_bytes"),
        description="Migrate lint: ... or at least this many bytes (pg_total_relation_size: table, TOAST and "
                    "indexes) block the run unless accepted.")
    migrate_health_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_aliases("migrate_health_urls"),
        description="Migrate: URLs that must answer 2xx after the migrations, comma-separated "
                    "(CharHub: http://backend:3000/api/v1/health).")
    migrate_health_timeout: float = Field(
        60.0, gt=0, le=3600, validation_alias=_aliases("migrate_health_timeout"),
        description="Migrate: seconds the health URLs get to answer 2xx.")

    # --- cleanup (charhub-ops cleanup) ---
    cleanup_policy_file: str | None = Field(
        None, validation_alias=_aliases("cleanup_policy_file"),
        description="Cleanup: the row-retention policy file (YAML, see deploy/cleanup-policy.example.yaml); "
                    "unset = the scheduled run skips rows.")
    cleanup_lock_timeout: float = Field(
        0.2, gt=0, le=60, validation_alias=_aliases("cleanup_lock_timeout"),
        description="Cleanup: lock_timeout (s) of each delete batch; a timeout shrinks the batch by a quarter.")
    cleanup_statement_timeout: float = Field(
        5.0, gt=0, le=600, validation_alias=_aliases("cleanup_statement_timeout"),
        description="Cleanup: statement_timeout (s) of each delete batch: the longest a writer can wait for a row.")
    cleanup_pause: float = Field(
        0.0, ge=0, le=60, validation_alias=_aliases("cleanup_pause"),
        description="Cleanup: the shortest pause (s) between delete batches (the pause is otherwise "
                    "cleanup_pause_ratio × the batch's duration).")
    cleanup_pause_ratio: float = Field(
        0.1, ge=0, le=100, validation_alias=_aliases("cleanup_pause_ratio"),
        description="Cleanup: the pause after a delete batch is this × the batch's duration (at least "
                    "cleanup_pause).")
    cleanup_max_batch: int = Field(
        50_000, ge=1, le=100_000, validation_alias=_aliases("cleanup_max_batch"),
        description="Cleanup: delete batches grow up to this many rows while a batch takes under 15 ms.")
    cleanup_min_batch: int = Field(
        100, ge=1, validation_alias=_aliases("cleanup_min_batch"),
        description="Cleanup: the smallest batch after timeouts; still timing out there fails the run (transient).")
    cleanup_sweep: Literal["auto", "index", "blocks"] = Field(
        "auto", validation_alias=_aliases("cleanup_sweep"),
        description="Cleanup: how batches find rows: along the timestamp index, block by block through the table, "
                    "or auto (blocks once the expired rows are >= 10 % of the table or no index leads with the "
                    "timestamp).")
    cleanup_media_repository: str | None = Field(
        None, validation_alias=_aliases("cleanup_media_repository"),
        description="Cleanup: the media bucket (CharHub: s3://charhub-media); unset = no orphan scan.")
    cleanup_media_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["prod/"], validation_alias=_aliases("cleanup_media_prefixes"),
        description="Cleanup: media prefixes scanned for orphans, comma-separated; only those a database owns "
                    "(cleanup_media_databases) are scanned.")
    cleanup_media_databases: SecretStr | None = Field(
        None, validation_alias=_aliases("cleanup_media_databases"),
        description="Cleanup: the database that owns each prefix's references, 'prefix/=owner' comma-separated; "
                    "owner: DATABASE_URL (the run's database), a postgresql:// URL or a Prefect Secret block name. "
                    "Unset: prod/=DATABASE_URL. A prefix without one is never scanned.")
    cleanup_media_max_orphan_share: float = Field(
        0.2, gt=0, le=1, validation_alias=_aliases("cleanup_media_max_orphan_share"),
        description="Cleanup: when more than this share of a prefix's objects look orphaned, nothing moves and the "
                    "run fails (the reference list is probably wrong); 1 turns the stop off.")
    cleanup_media_references: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_aliases("cleanup_media_references"),
        description="Cleanup: Table.column pairs holding media keys or URLs, comma-separated (required for "
                    "the orphan scan).")
    cleanup_media_grace: str = Field(
        "2d", validation_alias=_aliases("cleanup_media_grace"),
        description="Cleanup: media younger than this are never orphans (uploads in flight); 36h, 2d, 1w.")
    cleanup_media_mode: str = Field(
        "dry-run", pattern="^(dry-run|quarantine|delete)$", validation_alias=_aliases("cleanup_media_mode"),
        description="Cleanup: what happens to orphans: dry-run (report), quarantine (move under "
                    "quarantine/<date>/), delete.")
    cleanup_media_max_objects: int = Field(
        1000, ge=1, validation_alias=_aliases("cleanup_media_max_objects"),
        description="Cleanup: orphans acted on per run at most.")
    cleanup_quarantine_days: int = Field(
        30, ge=1, validation_alias=_aliases("cleanup_quarantine_days"),
        description="Cleanup: quarantined media are deleted after this many days.")
    cleanup_container_age_hours: float = Field(
        24.0, ge=0, validation_alias=_aliases("cleanup_container_age_hours"),
        description="Cleanup: stopped containers are removed this many hours after they stopped.")
    cleanup_keep_label: str = Field(
        "charhub.keep", min_length=1, validation_alias=_aliases("cleanup_keep_label"),
        description="Cleanup: containers with this label are never removed.")
    cleanup_build_cache: bool = Field(
        True, validation_alias=_aliases("cleanup_build_cache"),
        description="Cleanup: prune the Docker build cache too.")


    # --- monitoring and incidents (charhub-ops health / incident / maintenance) ---
    monitor_config: str = Field(
        "monitor.yaml", validation_alias=_aliases("monitor_config"),
        description="Monitor: the YAML file of checks, windows and incident settings.")
    monitor_state: str = Field(
        "auto", validation_alias=_aliases("monitor_state"),
        description="Monitor: where streaks, incidents and windows live: auto (Prefect Variables when a Prefect "
                    "server is configured, in the environment or the active profile; without one, windows and "
                    "incidents are refused and only `health` keeps its streaks in the repository), prefect, "
                    "repository, or a file:// / s3:// URL. The same on every host and worker.")

    # --- capacity report (charhub-ops capacity) ---
    capacity_window_days: float = Field(
        90.0, gt=0, validation_alias=_aliases("capacity_window_days"),
        description="Capacity: days of backups and disk samples the least-squares forecast is fitted over.")
    capacity_database_disk: str | None = Field(
        None, validation_alias=_aliases("capacity_database_disk"),
        description="Capacity: the disk path (of a monitor disk check) holding the database's data; "
                    "default: the first disk check's first path.")
    # --- deploy guard and rollback (charhub-ops deploy pre|post, rollback) ---
    deploy_gate_passes: int = Field(
        3, ge=1, validation_alias=_aliases("deploy_gate_passes"),
        description="Deploy: the health gate needs every check of the services to pass this many times in a row.")
    deploy_gate_timeout: float = Field(
        120.0, gt=0, validation_alias=_aliases("deploy_gate_timeout"),
        description="Deploy: seconds the health gate may take before it fails.")
    deploy_gate_interval: float = Field(
        2.0, ge=0, validation_alias=_aliases("deploy_gate_interval"),
        description="Deploy: seconds between two rounds of the health gate's probes.")
    deploy_window_minutes: float = Field(
        30.0, gt=0, validation_alias=_aliases("deploy_window_minutes"),
        description="Deploy: the maintenance window opened by `deploy pre` closes itself after this long.")
    # --- bootstrap (charhub-ops setup creates these blocks when missing; never overwrites one) ---
    database_url_block: str = Field(
        "charhub-ops-database-url", pattern=BLOCK_NAME, validation_alias=_aliases("database_url_block"),
        description="Setup: Secret block created from database_url when missing; forms take its name "
                    "(access.database_url_secret).")
    scratch_url_block: str = Field(
        "charhub-ops-scratch-url", pattern=BLOCK_NAME, validation_alias=_aliases("scratch_url_block"),
        description="Setup: Secret block with the scratch server's URL for restore drills (the name "
                    "verify-after-backup uses), created from scratch_url when missing.")
    scratch_url: SecretStr | None = Field(
        None, validation_alias=_aliases("scratch_url"),
        description="Setup only: the scratch server's URL, stored in the Secret block scratch_url_block.")
    age_identity_block: str = Field(
        "charhub-ops-age-identity", pattern=BLOCK_NAME, validation_alias=_aliases("age_identity_block"),
        description="Setup: Secret block created from the contents of age_identity_file when missing; forms "
                    "take its name (decryption.identity_secret); a rollback reads deploy records with it when "
                    "age_identity_file is unset.")
    notify_url: SecretStr | None = Field(
        None, validation_alias=_aliases("notify_url"),
        description="Setup only: webhook URL for creating the notification block notify_block when it is "
                    "missing (types with a url: slack-webhook, custom-webhook, ms-teams-webhook).")

    @field_validator("migrate_health_urls", "cleanup_media_prefixes", "cleanup_media_references", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("encrypt_to", "app_containers", mode="before")
    @classmethod
    def _split_recipients(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("r2_endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value and (problem := endpoint_url_problem(value)):
            raise ValueError(f"{problem} (R2_ENDPOINT_URL)")
        return value or None

    @field_validator("repository")
    @classmethod
    def _repository_scheme(cls, value: str) -> str:
        if not value.startswith(("s3://", "file://")) and "://" in value:
            raise ValueError(f"unsupported scheme in '{value}' (use s3://bucket/prefix or file:///path)")
        return value


def endpoint_url_problem(value: str) -> str | None:
    """Why ``value`` is not an S3/R2 endpoint URL (None if it is one)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"'{value}' is not an endpoint URL: expected https://host[:port]"
    return None


def env_name(field: str) -> str:
    """The environment variable that sets ``field`` (for error messages)."""
    return PREFIX + field.upper()


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment/.env plus explicit overrides (None = not given).

    Raises ConfigError naming the offending setting(s); never echoes a secret value.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "settings"
            field = field.lower().removeprefix(PREFIX.lower())
            problems.append(f"{field} ({env_name(field)}): {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None
