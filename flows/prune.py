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
from typing import Annotated

from prefect import flow
from prefect.utilities.annotations import quote
from pydantic import Field

from charhub_ops.retention.prune import prune_to_json
from flows.params import REPOSITORY_HELP, DatabaseName, Repository, Retention, described
from tasks.common import run_settings
from tasks.notify import notify_failure
from tasks.prune import delete_backups, plan_prune, prune_preview, prune_report, resolve_prune_config

__all__ = ["prune_flow"]


@flow(name="prune", on_failure=[notify_failure])
@described
def prune_flow(
    repository: Annotated[Repository | None, Field(description=REPOSITORY_HELP)] = None,
    dry_run: Annotated[bool, Field(description="Plan and preview only; delete nothing")] = False,
    database: Annotated[DatabaseName | None, Field(description="Only this database; default every database in the "
                                                            "repository")] = None,
    policy: Annotated[Retention, Field(description="Which backups to keep; empty: the settings' policy")] = Retention(),
) -> dict:
    """Apply the retention policy to every database of the repository; returns the plan and what was done."""
    cfg = resolve_prune_config(run_settings(repository=repository), policy.model_dump())
    plan = plan_prune(cfg.repo, cfg.policy, datetime.now(UTC), database or None)
    # quote(): a plan may list 10,000 backups; Prefect need not walk it looking for futures (~1 s a task)
    prune_preview(quote(plan), dry_run, cfg.policy_source)
    if dry_run:
        return prune_to_json(plan)
    result = delete_backups(cfg.repo, quote(plan))
    prune_report(quote(plan), result)
    return prune_to_json(plan, result)
