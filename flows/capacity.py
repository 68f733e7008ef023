"""Capacity: how fast the databases, their tables, the backups and the disks grow, and when they run out.

Runbook: resolve configuration (settings + parameters) → **gather** the inputs (the monitor's disk checks
and their kept samples, the cleanup policy file) → **report** from every backup manifest in the window
(database size, backup size, per-table sizes; least-squares growth per week; days until each disk reaches
its critical level and until each database outgrows its disk; tables outpacing the rest, with the cleanup
policy covering them) → the chart PNG in the work dir → **artifact** ``capacity-report`` (markdown, the
chart embedded) → returns the report (``charhub-ops capacity --json`` prints the same model).

Read only: nothing is changed. The ``capacity`` deployment runs it weekly, Monday 05:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from prefect import flow
from pydantic import Field

from charhub_ops.capacity.run import default_chart_path
from flows.params import Repository, StateStore, described
from tasks.capacity import build_capacity_report, capacity_artifact, capacity_inputs
from tasks.common import repo_spec, run_settings
from tasks.notify import notify_failure

__all__ = ["capacity_flow"]


@flow(name="capacity", on_failure=[notify_failure])
@described
def capacity_flow(
    repository: Annotated[Repository | None, Field(
        description="Backup repository whose manifests are read; default from settings")] = None,
    config: Annotated[str | None, Field(description="Monitor config (its disk checks); default from settings "
                                                 "(monitor_config)")] = None,
    state: Annotated[StateStore | None, Field(description="Monitor state store holding the disk samples; default from "
                                                "settings (monitor_state)")] = None,
    chart: Annotated[str | None, Field(description="Where to write the chart PNG; default: the work dir")] = None,
) -> dict:
    """Gather, report, chart, artifact. Returns the report model."""
    settings = run_settings(repository=repository)
    now = datetime.now(UTC)
    inputs = capacity_inputs(settings, config, state)
    report = build_capacity_report(repo_spec(settings.storage), inputs, now,
                                   chart or str(default_chart_path(settings.runs.work_dir, now)))
    capacity_artifact(report)
    return report
