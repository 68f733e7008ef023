"""Thin Prefect tasks over charhub_ops.cleanup: configuration, plans, acts, the preview and the report.

Each part (rows, storage, docker) has a plan task (read only, retried on transient errors) and an act
task. Acts are idempotent (a deleted row or object is gone; the cursor keeps row progress), but they
are not retried by Prefect: a partial act is reported as it is and the next run resumes. The ``prefect``
part's task (tasks/cleanup_prefect.py) counts and deletes; it is retried on transient API errors, since a
repeated round finds only the runs still there. The preview and report below show every part.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from pydantic import BaseModel

from charhub_ops.cleanup import docker_host, orphans
from charhub_ops.cleanup.policy import PolicyFile, TablePlan, load_policy_file
from charhub_ops.cleanup.rows import RowOptions
from charhub_ops.cleanup.run import plan_policies, rows_to_json, run_policies
from charhub_ops.deploy.releases import protected_images
from charhub_ops.fmt import human_bytes
from charhub_ops.pgurl import PgUrl
from charhub_ops.postgres import PsycopgSession
from charhub_ops.settings import Settings
from tasks.cleanup_media import MediaConfig, act_media, media_config, plan_media
from tasks.common import RETRY, RepoSpec, database_url, repo_spec
from tasks.locks import database_lock

__all__ = ["CleanupConfig", "resolve_cleanup_config", "plan_rows", "act_rows", "plan_storage", "act_storage",
           "plan_docker", "act_docker", "cleanup_preview", "cleanup_report"]


class CleanupConfig(BaseModel):
    model_config = {"arbitrary_types_allowed": True}

    url: PgUrl | None
    policies: PolicyFile | None
    rows: RowOptions
    backups: RepoSpec | None  # the backup repository (stale uploads); only for the storage part
    deploy: RepoSpec | None = None  # the repository's deploy records (last-good images); only for the docker part
    media: MediaConfig | None
    container_age_hours: float
    keep_label: str
    build_cache: bool


@task(name="resolve-cleanup-config", cache_policy=NONE)
def resolve_cleanup_config(settings: Settings, parts: list[str], media_mode: str | None,
                           database_url_secret: str | None) -> CleanupConfig:
    """The run's settings (read by the flow, its parameters over the environment), validated before anything
    runs (the policy file's shape too)."""
    cleanup = settings.cleanup
    policies = load_policy_file(cleanup.policy_file) if cleanup.policy_file else None
    media = media_config(settings, media_mode, database_url_secret) if "storage" in parts else None
    needs_db = "rows" in parts and policies is not None
    repo = repo_spec(settings.storage) if {"storage", "docker"} & set(parts) else None
    return CleanupConfig(url=database_url(settings.database, database_url_secret) if needs_db else None,
                         policies=policies, rows=cleanup.row_options(),
                         backups=repo if "storage" in parts else None, media=media,
                         deploy=repo if "docker" in parts else None,
                         container_age_hours=cleanup.container_age_hours, keep_label=cleanup.keep_label,
                         build_cache=cleanup.build_cache)


@task(name="plan-rows", cache_policy=NONE, **RETRY)
def plan_rows(url: PgUrl, policies: PolicyFile, now: datetime, opts: RowOptions) -> tuple[list[TablePlan], dict]:
    """Every policy checked against the catalog, then counted exactly: (plans, the dry-run JSON)."""
    with PsycopgSession(url) as session:
        plans = plan_policies(session.conn, policies)
        counted = run_policies(session.conn, plans, now, opts, dry_run=True)
    return plans, rows_to_json(plans, counted, now, dry_run=True)


@task(name="delete-rows", cache_policy=NONE)
def act_rows(url: PgUrl, plans: list[TablePlan], now: datetime, opts: RowOptions) -> dict:
    with database_lock(url.dbname), PsycopgSession(url) as session:
        results = run_policies(session.conn, plans, now, opts, dry_run=False)
    return rows_to_json(plans, results, now, dry_run=False)


@task(name="plan-storage", cache_policy=NONE, **RETRY)
def plan_storage(backups: RepoSpec, media: MediaConfig | None, now: datetime) -> dict:
    """Stale uploads; media orphans, each prefix judged against its own database (PolicyError: too many)."""
    uploads = orphans.stale_uploads(backups.open(), now)
    return {"uploads": [u.model_dump(mode="json") for u in uploads],
            "media": plan_media(media, now) if media is not None else None}


@task(name="clean-storage", cache_policy=NONE)
def act_storage(backups: RepoSpec, media: MediaConfig | None, plan: dict, now: datetime) -> dict:
    uploads = [orphans.Upload.model_validate(u) for u in plan["uploads"]]
    aborted = orphans.abort_stale_uploads(backups.open(), uploads)
    done = {"uploads_aborted": aborted.aborted_uploads, "warnings": aborted.warnings, "media": None}
    if media is not None and plan["media"] is not None:
        done["media"] = act_media(media, plan["media"], now)
        done["warnings"] = done["warnings"] + done["media"]["warnings"]
    return done


@task(name="plan-docker", cache_policy=NONE, **RETRY)
def plan_docker(now: datetime, age_hours: float, keep_label: str, build_cache: bool,
                deploy: RepoSpec | None = None) -> docker_host.DockerPlan:
    """The Docker plan; the last-good images the deploy records of ``deploy`` name are never candidates."""
    protected = protected_images(deploy.open()) if deploy else {}
    return docker_host.plan_docker(docker_host.scan_docker(), now, timedelta(hours=age_hours),
                                   build_cache=build_cache, keep_label=keep_label, protected=protected)


@task(name="clean-docker", cache_policy=NONE)
def act_docker(plan: docker_host.DockerPlan) -> dict:
    result = docker_host.execute_docker(plan)
    return {**result.model_dump(mode="json"), "bytes_freed": result.freed(plan.usage_before)}


# --- artifacts ----------------------------------------------------------------------------------------

def _rows_lines(summary: dict) -> list[str]:
    lines = ["## Rows", "", "| table | older than | cutoff | matched | deleted | sweep | batches | duration "
             "| slowest batch | lock waits | SKIP LOCKED reruns | stopped |", "|---" * 12 + "|"]
    for p in summary["policies"]:
        lines.append(f"| {p['table']} | {p['older_than']} | {p['cutoff'][:19]} | {p['matched']} | {p['deleted']} "
                     f"| {p.get('sweep') or '—'} | {p['batches']} | {p['seconds']:.1f} s "
                     f"| {p['slowest_batch'] * 1000:.0f} ms | {p['lock_waits']} | {p.get('skip_locked_batches', 0)} "
                     f"| {p['stopped']} |")
    for p in summary["policies"]:
        lines += [f"- ⚠ {p[w]}" for w in ("index_warning", "reference_warning") if p.get(w)]
        lines += [f"- also deletes/changes rows: {c}" for c in p["cascades"]]
        lines += [f"- a delete fails while a referencing row exists: {r}" for r in p["restricts"]]
    return lines


def _storage_lines(storage: dict, done: dict | None) -> list[str]:
    lines = ["## Object storage", "", f"- stale multipart uploads (backup repository): {len(storage['uploads'])}"
             + (f", aborted {done['uploads_aborted']}" if done else "")]
    media = storage.get("media")
    if media:
        lines += _media_lines(media, (done or {}).get("media"))
    lines += [f"- ⚠ {w}" for w in (done or {}).get("warnings", [])]
    return lines


def _media_lines(media: dict, result: dict | None) -> list[str]:
    lines = [f"- media `{media['repository']}` ({media['mode']}): {media['scanned']} scanned, "
             f"{media['young']} within the grace period, {media['referenced']} referenced, "
             f"{len(media['candidates'])} orphans ({human_bytes(media['candidate_bytes'])}), "
             f"{media['over_cap']} over the cap, {len(media['expired_quarantine'])} quarantine expired"]
    lines += [f"- {prefix} judged against the references in {db}" for prefix, db in media["databases"].items()]
    lines += [f"- {prefix}: not scanned (no database owns its references: cleanup_media_databases)"
              for prefix in media["not_scanned"]]
    if result:
        lines.append(f"- quarantined {len(result['quarantined'])} ({human_bytes(result['bytes_quarantined'])}), "
                     f"deleted {len(result['deleted'])} ({human_bytes(result['bytes_freed'])} freed), "
                     f"skipped {len(result['skipped_referenced'])} (referenced at re-check)")
        lines += [f"- skipped: referenced at re-check: {key}" for key in result["skipped_referenced"]]
    return lines


def _docker_lines(plan: dict, done: dict | None) -> list[str]:
    before = plan["usage_before"]
    lines = ["## Docker host", "", f"- before: images {human_bytes(before['images'])}, containers "
             f"{human_bytes(before['containers'])}, build cache {human_bytes(before['build_cache'])}, volumes "
             f"{human_bytes(before['volumes'])} (never touched)",
             f"- candidates: {len(plan['containers'])} stopped containers, {len(plan['images'])} dangling images"
             + (", build cache" if plan["build_cache"] else "")]
    lines += [f"- kept: {k}" for k in plan["kept"][:50]]
    if done:
        lines.append(f"- removed {len(done['removed_containers'])} containers, {len(done['removed_images'])} images; "
                     f"freed {human_bytes(done['bytes_freed'])} (build cache {human_bytes(done['build_cache_freed'])})")
        lines += [f"- ⚠ {w}" for w in done["warnings"]]
    return lines


def _prefect_lines(plan: dict, done: dict | None) -> list[str]:
    lines = ["## Prefect flow runs", "", f"- deployments (named in prefect.yaml, tagged charhub-ops): "
             f"{', '.join(plan['deployments']) or 'none registered'}",
             f"- expired: completed/cancelled ended more than {plan['older_than_days']:g} days ago, failed/crashed "
             f"more than {plan['failed_older_than_days']:g} days ago; {plan['batch_size']} per round", "",
             "| deployment | state | expired | deleted |", "|---|---|---|---|"]
    deleted = {(c["deployment_id"], c["state"]): c["runs"] for c in (done or {}).get("deleted", [])}
    for c in plan["expired"]:
        lines.append(f"| {c['deployment']} | {c['state']} | {c['runs']} "
                     f"| {deleted.get((c['deployment_id'], c['state']), 0) if done else '—'} |")
    if done:
        lines.append(f"\n- deleted {done['deleted_total']} in {done['batches']} requests; {done['skipped']} changed "
                     "since they were read and stay")
    return lines


def _markdown(summary: dict) -> str:
    title = "preview" if summary["kind"] == "preview" else "report"
    lines = [f"# Cleanup {title}{' (dry run)' if summary['dry_run'] else ''}: {', '.join(summary['parts'])}", ""]
    lines += [f"- {n}" for n in summary["notes"]]
    if summary["policies"]:
        lines += ["", *_rows_lines(summary)]
    if summary["storage"]:
        lines += ["", *_storage_lines(summary["storage"], summary.get("storage_done"))]
    if summary["docker"]:
        lines += ["", *_docker_lines(summary["docker"], summary.get("docker_done"))]
    if summary.get("prefect"):
        lines += ["", *_prefect_lines(summary["prefect"], summary.get("prefect_done"))]
    return "\n".join(lines)


@task(name="cleanup-preview", cache_policy=NONE)
def cleanup_preview(summary: dict) -> str:
    markdown = _markdown({**summary, "kind": "preview"})
    create_markdown_artifact(markdown, key="cleanup-preview", description="charhub-ops cleanup: what would go")
    return markdown


@task(name="cleanup-report", cache_policy=NONE)
def cleanup_report(summary: dict) -> str:
    markdown = _markdown({**summary, "kind": "report"})
    create_markdown_artifact(markdown, key="cleanup-report", description="charhub-ops cleanup")
    if summary["policies"]:
        keys = ("table", "matched", "deleted", "sweep", "batches", "seconds", "slowest_batch", "lock_waits",
                "skip_locked_batches", "stopped")
        create_table_artifact([{k: p[k] for k in keys} for p in summary["policies"]], key="cleanup-rows",
                              description="charhub-ops cleanup: rows per policy")
    return markdown
