"""The ``charhub-ops`` command line. It parses options and calls core code or a flow; nothing else.

One module per command group, each registered here, explicitly, on the one root app:

* :mod:`.app`: shared options, the one error guard (:func:`~charhub_ops.cli.app.run_guarded`), JSON, progress;
* :mod:`.backup`: ``backup``; :mod:`.repository`: ``backups list``, ``backups prune`` (a repository's backups);
* :mod:`.retention`: ``retention plan``; :mod:`.restore`: ``restore``, ``verify``;
* :mod:`.migrate`: ``migrate`` (also a group: ``migrate status``, ``migrate resolve``);
* :mod:`.cleanup`: ``cleanup`` (rows; also a group: ``cleanup storage``, ``cleanup docker``).
* :mod:`.health`: ``health``; :mod:`.monitor`: ``monitor run`` (the long-running monitor);
  :mod:`.incident`: ``incident respond|list|show``; :mod:`.maintenance`:
  ``maintenance start|stop|list``; :mod:`.ops`: ``setup``, ``serve``, ``status`` (the Prefect server itself);
  :mod:`.capacity`: ``capacity``.
* :mod:`.deploy`: ``deploy pre|post``, ``rollback`` (the deploy guard).
* :mod:`.pitr`: ``pitr setup|backup|info|expire`` (pgBackRest; :mod:`.pitr_restore` adds restore, verify,
  recover-table to the same group).

Every expected error (an ``OpsError``, an unreachable Prefect API) becomes one red line on stderr and exit
code 1, without a traceback. Secrets passed as options go to the process environment, never into flow
parameters. ``python -m charhub_ops.cli`` runs :func:`main` too (``__main__.py``).
"""

from __future__ import annotations

import typer

from charhub_ops.cli import (
    backup,
    capacity,
    cleanup,
    deploy,
    health,
    incident,
    maintenance,
    migrate,
    monitor,
    ops,
    pitr,
    repository,
    restore,
    retention,
)
from charhub_ops.cli.app import exit_now_if_api_gone

__all__ = ["app", "main"]

app = typer.Typer(name="charhub-ops", help="CharHub operations: backups to R2, retention, restores.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
app.command()(backup.backup)
app.add_typer(repository.app, name="backups")
app.add_typer(retention.app, name="retention")
app.command()(restore.restore)
app.command()(restore.verify)
app.add_typer(migrate.app, name="migrate")
app.add_typer(cleanup.app, name="cleanup")
app.command()(health.health)
app.add_typer(monitor.app, name="monitor")
app.add_typer(incident.app, name="incident")
app.add_typer(maintenance.app, name="maintenance")
app.command()(ops.setup)
app.command()(ops.serve)
app.command()(ops.status)
app.command()(capacity.capacity)
app.add_typer(deploy.app, name="deploy")
app.command()(deploy.rollback)
app.add_typer(pitr.app, name="pitr")


def main() -> None:
    try:
        app(prog_name="charhub-ops")
    except SystemExit as exc:
        exit_now_if_api_gone(exc.code)
        raise
