"""Clean up what grows without bound: expired rows, stale uploads and orphaned media, Docker leftovers.

Runbook: resolve configuration (settings + parameters; the policy file checked) → **plan** each part
(rows: every policy checked against the catalog, then counted exactly; storage: stale multipart uploads
in the backup repository, media orphans, each prefix judged against its own database — too many orphans
fail the run here; docker: stopped containers, dangling images, build cache) → **preview** artifact
(``dry_run`` stops here) → **act** (batched deletes with the cursor, VACUUM; aborts, quarantine/deletes
with each batch of media re-checked first; container and image removal, build cache prune) → **report**
(markdown + table artifacts) → event ``charhub.cleanup.completed``.
The ``prefect`` part plans by counting the flow runs of our deployments that have expired (completed/cancelled
after ``prefect_older_than_days``, failed/crashed after ``prefect_failed_older_than_days``) and acts by deleting
them through the Prefect API in batches (tasks/cleanup_prefect.py); never the run doing the cleanup.

Parts: ``rows`` (needs a policy file: parameter or CHARHUB_OPS_CLEANUP_POLICY_FILE; skipped with a note
when there is none), ``storage`` (media only with CHARHUB_OPS_CLEANUP_MEDIA_REPOSITORY), ``docker``,
``prefect`` (old flow runs of charhub-ops deployments on the Prefect server; docs/prefect-retention.md).
The ``cleanup`` deployment runs every part weekly and the docker part on ``charhub.disk.high``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from prefect import flow
from prefect.utilities.annotations import quote
from pydantic import Field

from charhub_ops.cleanup.prefect_runs import RunPolicy
from charhub_ops.errors import ConfigError
from flows.params import REPOSITORY_HELP, BlockName, CleanupPart, MediaMode, Repository, described
from tasks.cleanup import (
    act_docker,
    act_rows,
    act_storage,
    cleanup_preview,
    cleanup_report,
    plan_docker,
    plan_rows,
    plan_storage,
    resolve_cleanup_config,
)
from tasks.cleanup_prefect import prefect_runs
from tasks.common import run_settings
from tasks.notify import emit, notify_failure

__all__ = ["cleanup_flow", "COMPLETED", "PARTS"]

COMPLETED = "charhub.cleanup.completed"
PARTS = ("rows", "storage", "docker", "prefect")


def _check_parts(parts: list[str]) -> list[str]:
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise ConfigError(f"parts: {', '.join(unknown) or 'none given'}: choose from {', '.join(PARTS)}")
    return [p for p in PARTS if p in parts]


@flow(name="cleanup", on_failure=[notify_failure])
@described
def cleanup_flow(
    parts: Annotated[list[CleanupPart], Field(description="What to clean: rows, storage, docker, prefect")] = (
        "rows", "storage", "docker", "prefect"),
    dry_run: Annotated[bool, Field(description="Plan, count and preview only; nothing is deleted")] = False,
    policy_file: Annotated[str | None, Field(description="Row-retention policy file (YAML); default from settings "
                                                      "(cleanup_policy_file)")] = None,
    media_mode: Annotated[MediaMode | None, Field(description="Media orphans: dry-run, quarantine or delete; default "
                                                           "from settings (cleanup_media_mode, dry-run)")] = None,
    repository: Annotated[Repository | None, Field(description="Backup repository (stale uploads); "
                                                            + REPOSITORY_HELP)] = None,
    database_url_secret: Annotated[BlockName | None, Field(description="Name of the Prefect Secret block with the "
                                                                    "database URL; default: DATABASE_URL")] = None,
    prefect_older_than_days: Annotated[float, Field(gt=0, le=3650, description=(
        "prefect part: delete completed/cancelled flow runs of charhub-ops deployments that ended more than "
        "this many days ago"))] = 30,
    prefect_failed_older_than_days: Annotated[float, Field(gt=0, le=3650, description=(
        "prefect part: the same for failed/crashed runs (kept longer; not shorter than the above)"))] = 90,
    prefect_batch_size: Annotated[int, Field(ge=1, le=1000, description="prefect part: flow runs read and "
                                                                        "deleted per round")] = 200,
) -> dict:
    """Plan every part, preview, then (unless dry_run) clean and report. Returns the summary."""
    parts = _check_parts(parts)
    runs_policy = RunPolicy.from_days(prefect_older_than_days, prefect_failed_older_than_days, prefect_batch_size)
    settings = run_settings(repository=repository, cleanup_policy_file=policy_file)
    cfg = resolve_cleanup_config(settings, parts, media_mode, database_url_secret)
    now = datetime.now(UTC)
    summary = {"dry_run": dry_run, "now": now.isoformat(), "parts": parts, "notes": [], "policies": [],
               "storage": None, "docker": None, "prefect": None}
    plans, docker_plan = _plan(cfg, parts, now, summary, runs_policy)
    cleanup_preview(summary)
    if dry_run:
        return summary
    if plans:
        summary["policies"] = act_rows(cfg.url, quote(plans), now, cfg.rows)["policies"]
    if summary["storage"] is not None:
        summary["storage_done"] = act_storage(cfg.backups, cfg.media, quote(summary["storage"]), now)
    if docker_plan is not None:
        summary["docker_done"] = act_docker(quote(docker_plan))
    if "prefect" in parts:
        summary["prefect_done"] = prefect_runs(runs_policy, now, dry_run=False, current=_current_run())
    cleanup_report(summary)
    emit(COMPLETED, "charhub.cleanup", _event(summary))
    return summary


def _plan(cfg, parts: list[str], now: datetime, summary: dict, runs_policy: RunPolicy) -> tuple[list, object]:
    """Fill the summary's plan of each part; returns the row plans and the Docker plan (None: not run)."""
    plans, docker_plan = [], None
    if "rows" in parts:
        if cfg.policies is None:
            summary["notes"].append("rows: skipped (no policy file: set CHARHUB_OPS_CLEANUP_POLICY_FILE)")
        else:
            plans, counted = plan_rows(cfg.url, cfg.policies, now, cfg.rows)
            summary["policies"] = counted["policies"]
    if "storage" in parts:
        summary["storage"] = plan_storage(cfg.backups, cfg.media, now)
        if cfg.media is None:
            summary["notes"].append("media orphans: skipped (set CHARHUB_OPS_CLEANUP_MEDIA_REPOSITORY)")
    if "docker" in parts:
        docker_plan = plan_docker(now, cfg.container_age_hours, cfg.keep_label, cfg.build_cache, cfg.deploy)
        summary["docker"] = docker_plan.model_dump(mode="json")
    if "prefect" in parts:
        summary["prefect"] = prefect_runs(runs_policy, now, dry_run=True, current=_current_run())
    return plans, docker_plan


def _current_run() -> str | None:
    from prefect.runtime import flow_run

    return flow_run.id


def _event(summary: dict) -> dict:
    docker_done = summary.get("docker_done") or {}
    media = (summary.get("storage_done") or {}).get("media") or {}
    return {"parts": summary["parts"], "rows_deleted": sum(p["deleted"] for p in summary["policies"]),
            "policies": [{k: p[k] for k in ("table", "matched", "deleted", "stopped")} for p in summary["policies"]],
            "uploads_aborted": (summary.get("storage_done") or {}).get("uploads_aborted", 0),
            "media_quarantined": len(media.get("quarantined", [])), "media_deleted": len(media.get("deleted", [])),
            "media_skipped_referenced": len(media.get("skipped_referenced", [])),
            "media_bytes_freed": media.get("bytes_freed", 0), "docker_bytes_freed": docker_done.get("bytes_freed", 0),
            "prefect_runs_deleted": (summary.get("prefect_done") or {}).get("deleted_total", 0),
            "prefect_runs": (summary.get("prefect_done") or {}).get("deleted", [])}
