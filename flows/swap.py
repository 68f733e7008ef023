"""Swap a restored, verified copy into the live database name (the second half of `restore --replace`).

Runbook: resolve configuration → approval (production targets, from a deployment: a pause with a form
in the UI, reason required, recorded in the run's ``approval`` artifact — flows/approval.py) → safety
backup of the live database (the backup flow) → in one transaction: stop the app containers → block and
terminate connections → rename live → ``<live>_pre_restore_<ts>`` → rename restored → live → allow
connections → start the containers and wait for their health checks. Any failure rolls every step back
in reverse order. The old database is kept; this flow never drops one.

No parameter skips the approval: the restore flow, which asks with its whole plan, runs the same steps
(:func:`swap_databases`) inside its own run instead of calling this flow.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.transactions import transaction
from pydantic import Field

from charhub_ops.restore.swap import pre_restore_name
from flows.approval import Approval, approve
from flows.backup import backup_flow
from flows.params import Access, DatabaseName, Repository, Seconds, described
from tasks.common import run_settings
from tasks.notify import notify_failure
from tasks.restore import RestoreConfig, resolve_restore_config
from tasks.swap import allow, block_live, rename, start_apps, stop_apps

__all__ = ["swap_flow", "swap_databases", "Approval", "approve"]


@flow(name="swap-restored-database", on_failure=[notify_failure])
@described
def swap_flow(
    live: Annotated[DatabaseName, Field(description="The live database name (it is renamed, never dropped)")],
    restored: Annotated[DatabaseName, Field(description="The verified restored copy to put in its place")],
    repository: Annotated[Repository | None, Field(description="Repository for the safety backup; default from "
                                                            "settings")] = None,
    access: Annotated[Access, Field(description="How to reach the database server")] = Access(),
    health_timeout: Annotated[Seconds, Field(
        description="Seconds to wait for the app containers' health checks")] = 120,
) -> dict:
    """Swap ``restored`` into ``live`` (production: after an approval); returns the names used."""
    settings = run_settings(repository=repository, docker_container=access.docker_container)
    cfg = resolve_restore_config(settings, None, access.database_url_secret)
    if cfg.production:
        approve(f"Swap `{restored}` into `{live}`? The live database is renamed (kept); containers stopped: "
                f"{', '.join(cfg.app_containers) or 'none'}.")
    return swap_databases(cfg, live, restored, repository, access, health_timeout)


def swap_databases(cfg: RestoreConfig, live: str, restored: str, repository: str | None, access: Access,
                   health_timeout: float = 120) -> dict:
    """The swap itself, inside the caller's run, for a caller that had it approved (restore with ``replace``
    asks with the whole plan first): safety backup, then the renames in one transaction."""
    safety = backup_flow(repository=repository, access=access)
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
