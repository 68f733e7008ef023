"""Swap a restored, verified copy into the live database name (the second half of `restore --replace`).

Runbook: resolve configuration → approval (production targets, from a deployment: a pause with a form
in the UI) → safety backup of the live database (the backup flow) → in one transaction: stop the app
containers → block and terminate connections → rename live → ``<live>_pre_restore_<ts>`` → rename
restored → live → allow connections → start the containers and wait for their health checks. Any
failure rolls every step back in reverse order. The old database is kept; this flow never drops one.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger, pause_flow_run, runtime
from prefect.input import RunInput
from prefect.transactions import transaction
from pydantic import Field

from charhub_ops.errors import ConfigError
from charhub_ops.swap import pre_restore_name
from flows.backup import backup_flow
from tasks.notify import notify_failure
from tasks.restore import resolve_restore_config
from tasks.swap import allow, block_live, rename, start_apps, stop_apps

__all__ = ["swap_flow", "Approval", "approve"]


class Approval(RunInput):
    approve: bool = Field(False, description="Tick to swap the restored copy into the live database")
    reason: str = Field("", description="Why (kept in the run's record)")


@flow(name="swap-restored-database", on_failure=[notify_failure])
def swap_flow(
    live: str = Field(..., description="The live database name (it is renamed, never dropped)"),
    restored: str = Field(..., description="The verified restored copy to put in its place"),
    repository: str | None = Field(None, description="Repository for the safety backup; default from settings"),
    docker_container: str | None = Field(None, description="Database container for psql/pg_dump"),
    database_url_secret: str | None = Field(None, description="Prefect Secret block with the server URL"),
    health_timeout: float = Field(120, description="Seconds to wait for the app containers' health checks"),
    approved: bool = Field(False, description="Already approved (the restore flow asked with the full plan)"),
) -> dict:
    """Swap ``restored`` into ``live``; returns the names used."""
    cfg = resolve_restore_config(repository, docker_container, None, None, database_url_secret)
    if cfg.production and not approved:
        approve(f"Swap `{restored}` into `{live}`? The live database is renamed (kept); containers stopped: "
                f"{', '.join(cfg.app_containers) or 'none'}.")
    safety = backup_flow(repository=repository, docker_container=docker_container,
                         database_url_secret=database_url_secret)
    old = pre_restore_name(live, datetime.now(UTC).strftime("%Y%m%d%H%M%S"))
    url, box = cfg.url, cfg.container
    with transaction():
        stop_apps(cfg.app_containers)
        block_live(url, box, live)
        rename(url, box, live, old)
        rename(url, box, restored, live)
        allow(url, box, old)
        start_apps(cfg.app_containers, health_timeout)
    get_run_logger().info("%s now holds the restored copy; the previous database is kept as %s", live, old)
    return {"replaced": True, "previous_database": old, "database": live,
            "safety_backup_id": safety[0]["backup_id"] if safety else None}


def approve(plan: str) -> None:
    """Production: a run from a deployment pauses until a human approves ``plan`` in the UI (a RunInput
    form; refused or 1 h without answer: the run fails, nothing touched). Elsewhere the CLI's --yes has
    been required already."""
    if runtime.deployment.id is None:
        return
    answer = pause_flow_run(wait_for_input=Approval.with_initial_data(description=plan), timeout=3600)
    if not answer.approve:
        raise ConfigError(f"restore not approved: {answer.reason or 'no reason given'}")
