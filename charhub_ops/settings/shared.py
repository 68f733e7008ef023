"""Settings of the systems every pipeline shares: the database, the repository, runs, bootstrap."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from charhub_ops.settings.base import BLOCK_NAME, Group, aliases

__all__ = ["DatabaseSettings", "StorageSettings", "RunSettings", "BootstrapSettings", "endpoint_url_problem"]


def endpoint_url_problem(value: str) -> str | None:
    """Why ``value`` is not an S3/R2 endpoint URL (None if it is one)."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"'{value}' is not an endpoint URL: expected https://host[:port]"
    return None


class DatabaseSettings(Group):
    title = "Database"

    database_url: SecretStr | None = Field(
        None, validation_alias=aliases("database_url", "DATABASE_URL"),
        description="PostgreSQL URL to back up, restore, migrate and clean (Prisma's `?schema=public` form "
                    "accepted). With a container: the URL as seen inside it (CharHub: "
                    "`postgresql://charhub@localhost/charhub_db`).")
    docker_container: str | None = Field(
        None, description="Run pg_dump/pg_dumpall/psql inside this container through the Docker API (CharHub: "
                          "`charhub-postgres-1`).")
    production: bool = Field(
        False, description="The target is production: `restore --replace` and `migrate` need approval in the UI, "
                           "or `--yes` on the CLI.")


class StorageSettings(Group):
    title = "Storage (the backup repository, S3/R2)"

    repository: str = Field(
        "file://./backups",
        description="Where backups live: `s3://bucket/prefix` (S3 or R2) or `file:///path`.")
    r2_account_id: str | None = Field(
        None, validation_alias=aliases("r2_account_id", "R2_ACCOUNT_ID"),
        description="R2 account; the endpoint becomes `https://<id>.r2.cloudflarestorage.com`, region `auto`.")
    r2_endpoint_url: str | None = Field(
        None, validation_alias=aliases("r2_endpoint_url", "R2_ENDPOINT_URL"),
        description="Explicit S3 endpoint, `https://host[:port]` (wins over the account id); else boto3's "
                    "`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`.")
    r2_access_key_id: SecretStr | None = Field(
        None, validation_alias=aliases("r2_access_key_id", "R2_ACCESS_KEY_ID"),
        description="R2 access key (secret); else boto3's usual chain (`AWS_ACCESS_KEY_ID`, …).")
    r2_secret_access_key: SecretStr | None = Field(
        None, validation_alias=aliases("r2_secret_access_key", "R2_SECRET_ACCESS_KEY"),
        description="R2 secret key (secret).")
    s3_region: str | None = Field(
        None, description="S3 region; `auto` is used with an R2 endpoint when unset.")
    part_size_mib: int = Field(
        8, ge=5, le=5120,
        description="Smallest multipart part (MiB, 5–5120); grown from the expected size so 10,000 parts "
                    "suffice.")
    upload_concurrency: int = Field(
        4, ge=1, le=32, description="Parts uploaded at once (memory ≈ n × part size).")
    s3_timeout: float = Field(
        60.0, gt=0, le=3600,
        description="Seconds to connect to S3/R2 and to wait for each answer or body chunk; a stalled request "
                    "is retried, a shorter stall is ridden out.")
    s3_max_attempts: int = Field(
        5, ge=1, le=20,
        description="Attempts per S3/R2 request (timeouts, 5xx, throttling); after them the task fails with a "
                    "transient error that the task retries handle.")

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

    def s3_options(self):
        """The S3/R2 client options (storage.S3Options) these settings give."""
        from charhub_ops.storage.base import MIB
        from charhub_ops.storage.s3_options import S3Options

        endpoint = self.r2_endpoint_url
        if not endpoint and self.r2_account_id:
            endpoint = f"https://{self.r2_account_id}.r2.cloudflarestorage.com"
        return S3Options(endpoint_url=endpoint, region=self.s3_region or ("auto" if endpoint else None),
                         access_key_id=self.r2_access_key_id, secret_access_key=self.r2_secret_access_key,
                         min_part_size=self.part_size_mib * MIB, concurrency=self.upload_concurrency,
                         timeout=self.s3_timeout, max_attempts=self.s3_max_attempts)


class RunSettings(Group):
    title = "Runs (every pipeline)"

    notify_block: str | None = Field(
        None, description="Prefect notification block told about failures, as `type-slug/name` (e.g. "
                          "`slack-webhook/ops-alerts`).")
    task_retries: int = Field(
        2, ge=0, le=3,
        description="Retries (0–3) of a task failing on an error known to be transient (network, HTTP 5xx, "
                    "throttling, serialization failure, lock timeout, terminated backend); bad input, failed "
                    "checks, a full disk, a missing container or a programming error fail at once.")
    task_retry_delay: float = Field(
        30.0, ge=0, le=3600,
        description="Seconds before the first retry; the next ones wait 4× and 10× as long.")
    lock_lease_seconds: float = Field(
        300.0, ge=60, le=86400,
        description="Lease (60–86400 s) of a held `postgres-<db>`, `service-<name>` or `incident-<check>` slot, "
                    "renewed every quarter: a Prefect API outage shorter than ¾ of it never lets another run "
                    "in; a run killed inside its section (SIGKILL, a lost worker) keeps the slot until the "
                    "lease expires (docs/deployments.md, Scale-out).")
    approval_poll_seconds: int = Field(
        10, ge=1, le=600,
        description="How often (s) a run paused for approval (restore or swap into production, deploy's restore_data) "
                    "checks whether it was answered; its first check comes this long after it paused.")
    work_dir: str | None = Field(
        None, description="Where file-mode restores decompress a dump (needs the raw dump size free; a full one "
                          "is one error, never retried) and capacity charts go; default: the system temp dir.")


class BootstrapSettings(Group):
    title = "Bootstrap (`charhub-ops setup` creates these blocks when missing; never overwrites one)"

    database_url_block: str = Field(
        "charhub-ops-database-url", pattern=BLOCK_NAME,
        description="Secret block created from the database URL when missing; forms take its name "
                    "(`access.database_url_secret`).")
    scratch_url_block: str = Field(
        "charhub-ops-scratch-url", pattern=BLOCK_NAME,
        description="Secret block with the scratch server's URL (the name `verify-after-backup` uses), created "
                    "from `CHARHUB_OPS_SCRATCH_URL` when missing.")
    scratch_url: SecretStr | None = Field(
        None, description="Setup only: the scratch server's URL for restore drills, stored in that Secret block "
                          "(flows never read it).")
    age_identity_block: str = Field(
        "charhub-ops-age-identity", pattern=BLOCK_NAME,
        description="Secret block created from the contents of `CHARHUB_OPS_AGE_IDENTITY_FILE` when missing; "
                    "forms take its name (`decryption.identity_secret`); a rollback reads encrypted deploy "
                    "records with it when `CHARHUB_OPS_AGE_IDENTITY_FILE` is unset.")
    notify_url: SecretStr | None = Field(
        None, description="Setup only: webhook URL from which the notification block `CHARHUB_OPS_NOTIFY_BLOCK` "
                          "is created when missing (`slack-webhook`, `custom-webhook`, `ms-teams-webhook`).")
