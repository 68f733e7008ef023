"""Settings of the data pipelines: backup, retention, restore, migrate, pitr."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr

from charhub_ops.settings.base import BLOCK_NAME, CommaList, Group

__all__ = ["BackupSettings", "RetentionSettings", "RestoreSettings", "MigrateSettings", "PitrSettings"]


class BackupSettings(Group):
    title = "Backup"

    encrypt_to: CommaList = Field(
        default_factory=list,
        description="age public keys (`age1…`), comma-separated; backups and deploy records are encrypted to "
                    "all of them; the backup host never needs the private key.")
    zstd_level: int = Field(3, ge=1, le=19, description="zstd level (1–19).")
    zstd_threads: int = Field(0, ge=0, le=64, description="zstd worker threads; 0 = one per CPU.")
    hash_limit_mib: int = Field(
        32, ge=0, le=1024,
        description="Tables up to this size (MiB) get a content hash (md5 of all rows) in the manifest, checked "
                    "by restore drills.")
    parallel_databases: int = Field(
        2, ge=1, le=16, description="With `--all`: size of the global concurrency limit `charhub-ops-backup`.")
    anomaly_low: float = Field(
        0.5, gt=0, description="Size anomaly: a backup smaller than this × the previous one is flagged.")
    anomaly_high: float = Field(
        2.0, gt=1, description="Size anomaly: a backup larger than this × the previous one is flagged.")


class RetentionSettings(Group):
    title = "Retention (restic's vocabulary; `-1` = unlimited, unset/0 = rule off)"

    keep_last: int | None = Field(None, ge=-1, description="Keep the newest n backups.")
    keep_hourly: int | None = Field(
        None, ge=-1, description="Keep the newest backup of each of the last n hours that have one.")
    keep_daily: int | None = Field(
        7, ge=-1, description="Keep the newest backup of each of the last n days that have one.")
    keep_weekly: int | None = Field(
        4, ge=-1, description="Keep the newest backup of each of the last n ISO weeks that have one.")
    keep_monthly: int | None = Field(
        6, ge=-1, description="Keep the newest backup of each of the last n months that have one.")
    keep_yearly: int | None = Field(
        None, ge=-1, description="Keep the newest backup of each of the last n years that have one.")
    keep_within: str | None = Field(
        None, description="Keep every backup within this duration of the newest (`7d`, `2w`, `1y6m`, `36h`).")
    min_keep: int = Field(3, ge=0, description="Never keep fewer complete backups of a database than this.")

    def policy(self, **options: Any):
        """The policy for the ``--keep-*`` options / flow parameters given over these settings
        (retention.options.choose_policy: any keep option given is the whole policy)."""
        from charhub_ops.retention.options import choose_policy

        return choose_policy(self, **options)


class RestoreSettings(Group):
    title = "Restore"

    age_identity_file: str | None = Field(
        None, description="age identity file to decrypt backups (restore/verify) and deploy records (rollback).")
    restore_jobs: int = Field(
        0, ge=0, le=32, description="`pg_restore -j` workers for a local dump file; 0 = min(4, CPUs).")
    restore_mode: str = Field(
        "auto", pattern="^(auto|stream|file)$",
        description="`stream`: pg_restore reads the download as it arrives (one job, no work-dir space); "
                    "`file`: verified file in the work dir, then `pg_restore -j`; `auto`: file when pg_restore "
                    "runs here with ≥ 2 jobs (CPUs) and the work dir holds the dump, else stream; over a slow "
                    "link to R2 `stream` hides the download behind the restore.")
    app_containers: CommaList = Field(
        default_factory=list,
        description="Containers stopped during `restore --replace`, comma-separated (CharHub: the backend "
                    "container).")


class MigrateSettings(Group):
    part = "migrate_"
    title = "Migrate"

    lock_wait: float = Field(
        60.0, ge=0, le=3600,
        description="Seconds to wait for Prisma's migration lock (advisory lock 72707369; `--lock-wait`).")
    lock_timeout: float = Field(
        5.0, gt=0, le=600,
        description="The longest `lock_timeout` (s) of a migration; attempts start at 0.1 s and grow to it.")
    lock_retries: int = Field(
        10, ge=1, le=100,
        description="Attempts of a migration that hits lock timeouts (rolled back each time).")
    statement_timeout: float = Field(
        900.0, ge=0,
        description="`statement_timeout` (s) of each migration, session-level for the whole file; 0 = none.")
    concurrent_timeout: float = Field(
        3600.0, ge=0,
        description="`statement_timeout` (s) of a CONCURRENTLY migration, which runs without `lock_timeout` (it "
                    "waits for older transactions); 0 = none.")
    big_table_rows: int = Field(
        100_000, ge=0,
        description="Lint: lock/rewrite findings on tables with at least this many rows block the run unless "
                    "accepted (`--accept RULE[:migration]`).")
    big_table_bytes: int = Field(
        1 << 30, ge=0,
        description="Lint: … or at least this many bytes (`pg_total_relation_size`: table, TOAST, indexes).")
    health_urls: CommaList = Field(
        default_factory=list,
        description="URLs that must answer 2xx after the migrations, comma-separated (CharHub: "
                    "`http://backend:3000/api/v1/health`).")
    health_timeout: float = Field(60.0, gt=0, le=3600, description="Seconds the health URLs get to answer 2xx.")

    def runner_options(self, lock_wait: float | None = None):
        """The migration runner's options (``lock_wait``: the run's override)."""
        from charhub_ops.migrations.runner import RunnerOptions

        return RunnerOptions(lock_wait=self.lock_wait if lock_wait is None else lock_wait,
                             lock_timeout=self.lock_timeout, lock_retries=self.lock_retries,
                             statement_timeout=self.statement_timeout, concurrent_timeout=self.concurrent_timeout)


class PitrSettings(Group):
    part = "pitr_"
    title = "Point-in-time recovery (pgBackRest)"

    repository: str | None = Field(
        None,
        description="pgBackRest's repository: `s3://bucket/prefix` (S3 or R2, the endpoint and keys of the "
                    "storage group) or `file:///path` (a posix repository on the database host); never the "
                    "logical backups' repository or the media bucket. Unset: the `pitr` commands fail with one "
                    "line naming it.")
    stanza: str = Field(
        "charhub", pattern="^[A-Za-z0-9][A-Za-z0-9_-]*$", description="pgBackRest stanza (one per cluster).")
    pg_path: str = Field(
        "/var/lib/postgresql/data",
        description="The cluster's data directory where pgBackRest runs (`pg1-path`; postgres:16's PGDATA).")
    socket_path: str = Field(
        "/var/run/postgresql",
        description="Unix socket directory pgBackRest connects through (`pg1-socket-path`; the port is the "
                    "database URL's).")
    config_path: str = Field(
        "/etc/pgbackrest/pgbackrest.conf",
        description="Where `pitr setup` writes pgBackRest's configuration (in the database container when "
                    "`CHARHUB_OPS_DOCKER_CONTAINER` is set, else on this host); `archive_command` reads it.")
    cipher_pass: SecretStr | None = Field(
        None, description="Passphrase of the repository's aes-256-cbc encryption (secret); else read from the "
                          "Secret block `pitr_cipher_block`.")
    cipher_block: str = Field(
        "charhub-ops-pitr-cipher", pattern=BLOCK_NAME,
        description="Secret block holding the repository passphrase, used when `CHARHUB_OPS_PITR_CIPHER_PASS` "
                    "is unset (`charhub-ops setup` creates it from that variable when missing and "
                    "`pitr_repository` is set).")
    process_max: int = Field(2, ge=1, le=32, description="pgBackRest's `process-max` for backup and restore.")
    compress_level: int = Field(3, ge=1, le=19, description="zstd level of pgBackRest's `compress-level`.")
    block_incremental: bool = Field(
        False,
        description="`repo1-block=y` (block-level incremental backups). pgBackRest 2.45 (Debian 12) ships it as "
                    "a beta feature (`beta=y`); off by default until the image's pgBackRest is ≥ 2.46.")
    s3_ca_file: str | None = Field(
        None, description="CA certificate file pgBackRest trusts for the S3 endpoint (a private CA).")
    s3_verify_tls: bool = Field(True, description="Verify the S3 endpoint's TLS certificate (off only for tests).")
    io_timeout: int = Field(
        60, ge=1, le=3600,
        description="pgBackRest's `io-timeout` (seconds): how long it retries a refused or stalled repository "
                    "connection before failing; `info` reads four files, so an unreachable repository is "
                    "reported after about four times this.")
    keep_weekly: int = Field(
        4, ge=1, le=9999999,
        description="Full backups kept (weekly fulls → weeks; `repo1-retention-full`, count).")
    keep_daily: int = Field(
        7, ge=1, le=9999999,
        description="Differential backups kept (daily diffs → days; `repo1-retention-diff`); WAL is kept "
                    "as far back as the oldest full backup kept.")
    image: str | None = Field(
        None, description="Image of the scratch containers `pitr restore`/`verify`/`recover-table` start (it "
                          "needs PostgreSQL and pgbackrest); default: the database container's image.")
