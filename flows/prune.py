"""Prune the backup repository: the retention policy (GFS, restic semantics) plus leftover cleanup.

Policy: when any ``keep_*`` parameter is given, the parameters given are the whole policy (as with
``restic forget``); when none is, the settings' policy applies (``CHARHUB_OPS_KEEP_*``). ``min_keep``:
the parameter, else the setting.

Runbook: resolve configuration (settings + parameters) → plan (one listing, pure policy) → preview
artifact → act, unless ``dry_run`` (data objects first, manifests last) → report artifact.
Deletes the store refuses (an R2 bucket lock) are warnings in the report, not failures. A policy that
would remove every complete backup of a database fails the run before anything is deleted.

It runs after each backup through the trigger of the ``prune-after-backup`` deployment in prefect.yaml:
the ``charhub.backup.completed`` event of ``flows.backup`` carries the repository and the database.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.utilities.annotations import quote
from pydantic import Field

from charhub_ops.prune import prune_to_json
from charhub_ops.retention_options import SETTINGS_FIELDS
from tasks.notify import notify_failure
from tasks.retention import delete_backups, plan_prune, prune_preview, prune_report, resolve_prune_config

__all__ = ["prune_flow"]

@flow(name="prune", on_failure=[notify_failure])
def prune_flow(
    repository: str | None = Field(None, description="s3://bucket/prefix or file:///path; default from settings"),
    keep_last: int | None = Field(None, description="Keep the newest N backups (-1 = all). Any keep_* given "
                                                    "replaces the settings' whole policy (daily 7, weekly 4, "
                                                    "monthly 6)"),
    keep_hourly: int | None = Field(None, description="Keep the newest backup of each of N hours"),
    keep_daily: int | None = Field(None, description="Keep the newest backup of each of N days"),
    keep_weekly: int | None = Field(None, description="Keep the newest backup of each of N ISO weeks"),
    keep_monthly: int | None = Field(None, description="Keep the newest backup of each of N months"),
    keep_yearly: int | None = Field(None, description="Keep the newest backup of each of N years"),
    keep_within: str | None = Field(None, description="Keep every backup within D of the newest (7d, 2w, 1y6m)"),
    min_keep: int | None = Field(None, description="Never keep fewer complete backups per database (settings: 3)"),
    dry_run: bool = Field(False, description="Plan and preview only; delete nothing"),
    database: str | None = Field(None, description="Only this database; default every database in the repository"),
) -> dict:
    """Apply the retention policy to every database of the repository; returns the plan and what was done."""
    options = {name: value for name, value in locals().items() if name in SETTINGS_FIELDS}
    cfg = resolve_prune_config(repository, options)
    plan = plan_prune(cfg.repo, cfg.policy, datetime.now(UTC), database or None)
    # quote(): a plan may list 10,000 backups; Prefect need not walk it looking for futures (~1 s a task)
    prune_preview(quote(plan), dry_run, cfg.policy_source)
    if dry_run:
        return prune_to_json(plan)
    result = delete_backups(cfg.repo, quote(plan))
    prune_report(quote(plan), result)
    return prune_to_json(plan, result)
