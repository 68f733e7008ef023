"""Settings of the operations pipelines: cleanup, monitor, capacity, deploy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from charhub_ops.settings.base import CommaList, Group

__all__ = ["CleanupSettings", "MonitorSettings", "CapacitySettings", "DeploySettings"]


class CleanupSettings(Group):
    part = "cleanup_"
    title = "Cleanup"

    policy_file: str | None = Field(
        None, description="The row-retention policy file (YAML, see deploy/cleanup-policy.example.yaml; "
                          "`--policy`); unset: the scheduled run skips rows.")
    lock_timeout: float = Field(
        0.2, gt=0, le=60,
        description="`lock_timeout` (s) of each delete batch; a timeout shrinks the batch by a quarter.")
    statement_timeout: float = Field(
        5.0, gt=0, le=600,
        description="`statement_timeout` (s) of each delete batch — also the longest the app can wait for a row.")
    pause: float = Field(
        0.0, ge=0, le=60,
        description="The shortest pause (s) between batches (a floor under `PAUSE_RATIO` × the batch's "
                    "duration; 0.01 made 30 fast batches pay 0.3 s of sleep, as long as the deleting).")
    pause_ratio: float = Field(
        0.1, ge=0, le=100,
        description="The pause after a batch is this × the batch's duration (0.1: the cleaner works ≤ 91 % of "
                    "the time; 0.25: ≤ 80 %).")
    max_batch: int = Field(
        50_000, ge=1, le=100_000,
        description="Batches start at the policy's `batch_size` and grow by half up to this while a full batch "
                    "takes under 15 ms.")
    min_batch: int = Field(
        100, ge=1,
        description="The smallest batch after timeouts; timing out there 5 times fails the run (transient: "
                    "retried).")
    sweep: Literal["auto", "index", "blocks"] = Field(
        "auto",
        description="How batches find rows — `index` (oldest first along the timestamp index), `blocks` (range "
                    "by range through the heap: one pass per run, as fast as one `DELETE`), `auto` (blocks once "
                    "the expired rows are ≥ 10 % of the table's estimate or no index leads with the timestamp; "
                    "partitioned tables always index).")
    media_repository: str | None = Field(
        None, description="The media bucket (CharHub: `s3://charhub-media`); unset: no orphan scan.")
    media_prefixes: CommaList = Field(
        default_factory=lambda: ["prod/"],
        description="Media prefixes scanned for orphans, comma-separated — only those a database owns "
                    "(`CHARHUB_OPS_CLEANUP_MEDIA_DATABASES`).")
    media_databases: SecretStr | None = Field(
        None, description="The database owning each prefix's references, `prefix/=owner` comma-separated; owner "
                          "`DATABASE_URL` (the run's database), a `postgresql://` URL or a Prefect Secret block "
                          "name (e.g. `prod/=DATABASE_URL,dev/=charhub-dev-database-url`); unset: "
                          "`prod/=DATABASE_URL`; a prefix without one is never scanned.")
    media_max_orphan_share: float = Field(
        0.2, gt=0, le=1,
        description="More orphans than this share of a prefix's objects stops the run before anything moves "
                    "(the reference list is probably wrong); `1`: off.")
    media_references: CommaList = Field(
        default_factory=list,
        description="`Table.column` pairs holding media keys or URLs (text, text[], json/jsonb), "
                    "comma-separated (required for the orphan scan).")
    media_grace: str = Field(
        "2d", description="Younger media are never orphans (uploads in flight); `36h`, `2d`, `1w`.")
    media_mode: str = Field(
        "dry-run", pattern="^(dry-run|quarantine|delete)$",
        description="What happens to orphans: `dry-run` (report), `quarantine` (move under "
                    "`quarantine/<date>/`) or `delete`.")
    media_max_objects: int = Field(1000, ge=1, description="Orphans acted on per run at most.")
    quarantine_days: int = Field(30, ge=1, description="Quarantined media are deleted after this many days.")
    container_age_hours: float = Field(
        24.0, ge=0, description="Stopped containers are removed this many hours after they stopped.")
    keep_label: str = Field(
        "charhub.keep", min_length=1, description="Containers with this label are never removed.")
    build_cache: bool = Field(True, description="Prune the Docker build cache too.")

    def row_options(self):
        """The batched deleter's options (cleanup.rows.RowOptions)."""
        from charhub_ops.cleanup.rows import RowOptions

        return RowOptions(lock_timeout=self.lock_timeout, statement_timeout=self.statement_timeout,
                          pause=self.pause, pause_ratio=self.pause_ratio, max_batch=self.max_batch,
                          floor=self.min_batch, sweep=self.sweep)

    def orphan_options(self, mode: str | None = None):
        """The orphan scan's options (cleanup.orphans.OrphanOptions; ``mode``: the run's override)."""
        from datetime import datetime

        from charhub_ops.cleanup.orphans import OrphanOptions
        from charhub_ops.retention.policy import parse_duration

        grace, epoch = parse_duration(self.media_grace, option="cleanup_media_grace"), datetime(2000, 1, 1)
        return OrphanOptions(prefixes=self.media_prefixes, grace=epoch - grace.before(epoch),
                             max_objects=self.media_max_objects, mode=mode or self.media_mode,
                             quarantine_days=self.quarantine_days, max_orphan_share=self.media_max_orphan_share)


class MonitorSettings(Group):
    part = "monitor_"
    title = "Monitor and incidents"

    config: str = Field("monitor.yaml", description="The YAML file of checks, windows and incident settings.")
    state: str = Field(
        "auto",
        description="Where streaks, incidents and windows live — `auto` (Prefect Variables when a Prefect server "
                    "is configured: `PREFECT_API_URL` in the environment or the active Prefect profile; without "
                    "one, windows and incidents fail with one line and only `health` keeps its streaks in the "
                    "repository), `prefect`, `repository` (under `monitor/state/`), or a `file://`/`s3://` URL — "
                    "the same on every host and worker.")


class CapacitySettings(Group):
    part = "capacity_"
    title = "Capacity"

    window_days: float = Field(
        90.0, gt=0, description="Days of backups and disk samples the least-squares forecast is fitted over.")
    database_disk: str | None = Field(
        None, description="The disk path (of a monitor disk check) holding the database's data, for \"days until "
                          "the database outgrows its disk\"; default: the first disk check's first path.")


class DeploySettings(Group):
    part = "deploy_"
    title = "Deploy guard and rollback"

    gate_passes: int = Field(
        3, ge=1, description="The health gate needs every check of the services to pass this many times in a row.")
    gate_timeout: float = Field(120.0, gt=0, description="Seconds the health gate may take before it fails.")
    gate_interval: float = Field(2.0, ge=0, description="Seconds between two rounds of the gate's probes.")
    window_minutes: float = Field(
        30.0, gt=0, description="The maintenance window opened by `deploy pre` closes itself after this long.")
