"""`charhub-ops cleanup` (rows by a policy file), `cleanup storage`, `cleanup docker` and `cleanup prefect` (old flow
runs of our deployments): each runs the Prefect ``cleanup`` flow with one part, so every run leaves its preview and
report artifacts.

``cleanup`` is both a command and a group: the group's callback takes the row options and runs when no
subcommand is given.
"""

from __future__ import annotations

from typing import Annotated

import typer

from charhub_ops.cli.app import JsonOpt, err, prepare_prefect, print_json, run_guarded, use_database_url
from charhub_ops.errors import ConfigError

__all__ = ["app"]

app = typer.Typer(help="Clean up: expired rows in safe batches, stale uploads and media orphans, Docker leftovers, "
                       "old Prefect flow runs.",
                  invoke_without_command=True, no_args_is_help=False)

DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Plan, count and preview only; delete nothing.")]


def _size(n: int) -> str:
    from charhub_ops.fmt import human_bytes

    return human_bytes(n)


def _print_rows(summary: dict) -> None:
    for p in summary["policies"]:
        done = (f"would delete {p['would_delete']}" if summary["dry_run"] else
                f"deleted {p['deleted']} in {p['batches']} batches, {p['seconds']:.1f} s, {p['stopped']}")
        err.print(f"  {p['table']}: {p['matched']} rows older than {p['older_than']} — {done}", highlight=False)
        for warning in (p[w] for w in ("index_warning", "reference_warning") if p.get(w)):
            err.print(f"    [yellow]⚠[/] {warning}", highlight=False)
        for cascade in p["cascades"]:
            err.print(f"    also deletes/changes rows: {cascade}", highlight=False)


def _print_storage(summary: dict) -> None:
    storage, done = summary["storage"], summary.get("storage_done") or {}
    err.print(f"  stale uploads: {len(storage['uploads'])}, aborted {done.get('uploads_aborted', 0)}", highlight=False)
    media = storage.get("media")
    if media:
        result = done.get("media") or {}
        err.print(f"  media ({media['mode']}): {media['scanned']} scanned, {len(media['candidates'])} orphans "
                  f"({_size(media['candidate_bytes'])}), quarantined {len(result.get('quarantined', []))}, "
                  f"deleted {len(result.get('deleted', []))}, skipped {len(result.get('skipped_referenced', []))} "
                  f"(referenced at re-check)", highlight=False)
        for prefix in media.get("not_scanned", []):
            err.print(f"  media {prefix}: not scanned (no database owns its references: "
                      f"CHARHUB_OPS_CLEANUP_MEDIA_DATABASES)", highlight=False)


def _print_docker(summary: dict) -> None:
    plan, done = summary["docker"], summary.get("docker_done") or {}
    err.print(f"  docker: {len(plan['containers'])} stopped containers, {len(plan['images'])} dangling images; "
              f"freed {_size(done.get('bytes_freed', 0))}", highlight=False)


def _print_prefect(summary: dict) -> None:
    plan, done = summary["prefect"], summary.get("prefect_done")
    err.print(f"  prefect: {', '.join(plan['deployments']) or 'no charhub-ops deployment registered'}",
              highlight=False)
    for c in (done or plan)["deleted" if done else "expired"]:
        err.print(f"    {c['deployment']} {c['state']}: {'deleted' if done else 'would delete'} {c['runs']}",
                  highlight=False)
    if done:
        skipped = f", {done['skipped']} changed since they were read (kept)" if done["skipped"] else ""
        err.print(f"  prefect: deleted {done['deleted_total']} flow runs in {done['batches']} requests{skipped}",
                  highlight=False)


def _print(summary: dict) -> None:
    err.print(f"[bold]cleanup[/] {', '.join(summary['parts'])}{' (dry run)' if summary['dry_run'] else ''}",
              highlight=False)
    for note in summary["notes"]:
        err.print(f"  {note}", highlight=False)
    _print_rows(summary)
    if summary["storage"]:
        _print_storage(summary)
    if summary["docker"]:
        _print_docker(summary)
    if summary.get("prefect"):
        _print_prefect(summary)
    for warning in (summary.get("storage_done") or {}).get("warnings", []) + \
            (summary.get("docker_done") or {}).get("warnings", []):
        err.print(f"  [yellow]⚠[/] {warning}", highlight=False)


def _run_flow(as_json: bool, **params) -> None:
    prepare_prefect()
    from flows.cleanup import cleanup_flow

    summary = run_guarded(lambda: cleanup_flow(**params))
    print_json(summary) if as_json else _print(summary)


@app.callback(invoke_without_command=True)
def cleanup(
    ctx: typer.Context,
    database_url: Annotated[str | None, typer.Option("--database-url", help="The database (also DATABASE_URL).")
                            ] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Row-retention policy file (YAML).")] = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete expired rows as the policy file says, in short batches (plan → preview → delete → report)."""
    if ctx.invoked_subcommand is not None:
        return
    from charhub_ops.cleanup.policy import load_policy_file

    def check() -> None:
        if policy is None:
            raise ConfigError("--policy: required (the row-retention policy file; see "
                              "deploy/cleanup-policy.example.yaml)")
        load_policy_file(policy)
        use_database_url(database_url)

    run_guarded(check)
    _run_flow(as_json, parts=["rows"], dry_run=dry_run, policy_file=policy)


@app.command()
def storage(
    dry_run: DryRunOpt = False,
    mode: Annotated[str | None, typer.Option("--mode", help="Media orphans: dry-run, quarantine or delete "
                                                            "(default: CHARHUB_OPS_CLEANUP_MEDIA_MODE, dry-run).")
                    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Abort stale multipart uploads in the backup repository; find (and quarantine) orphaned media."""
    from flows.params import MediaMode, check_value

    run_guarded(lambda: check_value("--mode", MediaMode | None, mode))
    _run_flow(as_json, parts=["storage"], dry_run=dry_run, media_mode=mode)


@app.command()
def docker(dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Remove dangling images, old stopped containers and build cache — never volumes."""
    _run_flow(as_json, parts=["docker"], dry_run=dry_run)


@app.command("prefect")
def prefect_runs(
    dry_run: DryRunOpt = False,
    older_than_days: Annotated[float, typer.Option("--older-than-days", help="Delete completed/cancelled runs of "
                                                   "charhub-ops deployments that ended more than N days ago.")] = 30,
    failed_older_than_days: Annotated[float, typer.Option("--failed-older-than-days", help="The same for "
                                                          "failed/crashed runs (kept longer).")] = 90,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Flow runs read and deleted per round.")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Delete old flow runs of charhub-ops deployments on the Prefect server (never running ones, never others')."""
    from charhub_ops.cleanup.prefect_runs import RunPolicy

    run_guarded(lambda: RunPolicy.from_days(older_than_days, failed_older_than_days, batch_size))
    _run_flow(as_json, parts=["prefect"], dry_run=dry_run, prefect_older_than_days=older_than_days,
              prefect_failed_older_than_days=failed_older_than_days, prefect_batch_size=batch_size)
