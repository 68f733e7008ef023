"""Prefect tasks of the prune flow (the retention pipeline): resolve the policy, plan, preview, delete, report.

Thin wrappers of :mod:`charhub_ops.retention.prune`; the plan is computed once and the deletion acts on exactly
that plan (what the preview showed). Deleting is idempotent, so the delete task may retry.
"""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from pydantic import BaseModel

from charhub_ops.retention import prune
from charhub_ops.retention.options import describe_policy
from charhub_ops.retention.policy import RetentionPolicy
from charhub_ops.retention.prune import PrunePlan, PruneResult
from charhub_ops.settings import Settings
from tasks.common import RETRY, RepoSpec, repo_spec

__all__ = ["PruneConfig", "resolve_prune_config", "plan_prune", "prune_preview", "delete_backups",
           "prune_report", "table_rows", "MAX_ROWS"]

MAX_ROWS = 500  # rows of removed backups shown in an artifact; the rest are summed up in one row
MAX_LOGGED_WARNINGS = 20


class PruneConfig(BaseModel):
    repo: RepoSpec
    policy: RetentionPolicy
    policy_source: str  # "options" (the run's keep_* parameters) or "settings"


@task(name="resolve-prune-config", cache_policy=NONE)
def resolve_prune_config(settings: Settings, options: dict[str, int | str | None]) -> PruneConfig:
    """The run's settings (read by the flow); the run's keep_* parameters, if any is given, are the whole
    policy (:func:`charhub_ops.retention.options.choose_policy`). Validated before anything else runs."""
    policy, source = settings.retention.policy(**options)
    get_run_logger().info("policy (from %s): %s", source, describe_policy(policy))
    return PruneConfig(repo=repo_spec(settings.storage), policy=policy, policy_source=source)


@task(name="plan-prune", cache_policy=NONE, **RETRY)
def plan_prune(repo: RepoSpec, policy: RetentionPolicy, now: datetime, database: str | None) -> PrunePlan:
    """List the repository once and plan (pure); PolicyError if a database would lose every backup."""
    plan = prune.plan_prune(prune.scan_repository(repo.open(), database), policy, now)
    logger = get_run_logger()
    for db in plan.databases:
        logger.info("%s: keep %d, remove %d, in progress %d", db.database, len(db.keep), len(db.remove),
                    len(db.in_progress))
    if plan.orphans or plan.uploads or plan.partials:
        logger.info("leftovers older than %s: %d orphaned backups, %d incomplete uploads, %d temporary files",
                    prune.STALE_AFTER, len(plan.orphans), len(plan.uploads), len(plan.partials))
    return plan


@task(name="delete-backups", cache_policy=NONE, **RETRY)
def delete_backups(repo: RepoSpec, plan: PrunePlan) -> PruneResult:
    """Data objects first, manifests last; refusals come back as warnings (logged here)."""
    result = prune.execute_prune(repo.open(), plan)
    logger = get_run_logger()
    logger.info("removed %d backups (%d objects), aborted %d uploads", len(result.removed),
                result.deleted_objects, result.aborted_uploads)
    for warning in result.warnings[:MAX_LOGGED_WARNINGS]:
        logger.warning("%s", warning)
    if len(result.warnings) > MAX_LOGGED_WARNINGS:
        logger.warning("… and %d more warnings (see the prune-report artifact)",
                       len(result.warnings) - MAX_LOGGED_WARNINGS)
    return result


def _row(database: str, item: str, action: str, detail: str) -> dict[str, str]:
    return {"database": database, "backup / object": item, "action": action, "detail": detail}


def _removed_rows(plan: PrunePlan, result: PruneResult | None) -> list[dict[str, str]]:
    done = set(result.removed) if result else set()
    rows = []
    for backup in plan.removed_backups():
        if result is None:
            action, detail = "remove", "not kept by any rule"
        elif backup.name in done:
            action, detail = "removed", f"{len(backup.data) + 1} objects"
        else:
            action, detail = "refused", "kept: the store refused a delete (see warnings)"
        rows.append(_row(backup.database, backup.backup_id, action, detail))
    return rows


def table_rows(plan: PrunePlan, result: PruneResult | None = None) -> list[dict[str, str]]:
    """One row per kept backup (with reasons), removed backup (at most MAX_ROWS), leftover and refusal."""
    rows = [_row(d.database, k.backup_id, "keep", ", ".join(k.reasons)) for d in plan.databases for k in d.keep]
    removed = _removed_rows(plan, result)
    rows += removed[:MAX_ROWS]
    if len(removed) > MAX_ROWS:
        rows.append(_row("", f"… {len(removed) - MAX_ROWS} more", "remove" if result is None else "removed", ""))
    verb = "remove" if result is None else "removed"
    rows += [_row(o.database, o.backup_id, f"{verb} orphan", f"{len(o.data)} objects, no manifest")
             for o in plan.orphans]
    rows += [_row("", u.key, "abort upload", f"initiated {u.initiated.isoformat()}") for u in plan.uploads]
    rows += [_row("", key, f"{verb} temporary file", "") for key in plan.partials]
    if result is not None:
        rows += [_row("", key, "refused", reason) for key, reason in result.refused.items()][:MAX_ROWS]
    return rows


@task(name="prune-preview", cache_policy=NONE)
def prune_preview(plan: PrunePlan, dry_run: bool, policy_source: str) -> None:
    """A table artifact of what the plan keeps (and why) and removes, before anything is deleted; its
    description names the effective policy and where it came from."""
    mode = "dry run: nothing will be deleted" if dry_run else "will be deleted next"
    create_table_artifact(table_rows(plan), key="prune-preview",
                          description=f"Prune plan for `{plan.repository}` ({mode}); policy (from "
                                      f"{policy_source}): {describe_policy(plan.policy)}")


@task(name="prune-report", cache_policy=NONE)
def prune_report(plan: PrunePlan, result: PruneResult) -> None:
    """A table artifact of what was kept (with reasons), removed and refused by the store."""
    create_table_artifact(table_rows(plan, result), key="prune-report",
                          description=f"Prune of `{plan.repository}`: {len(result.removed)} backups removed, "
                                      f"{len(result.refused)} deletes refused")
