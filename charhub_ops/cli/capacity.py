"""`charhub-ops capacity`: database, table, backup and disk growth, and when each runs out of room.

Runs in core, without Prefect: the manifests of the repository, the disk samples the monitor keeps in its
state store (Prefect Variables when ``PREFECT_API_URL`` names a server, else the repository), the cleanup
policy file. The ``capacity`` flow writes the same report as a markdown artifact.
"""

from __future__ import annotations

from typing import Annotated

import typer

from charhub_ops.cli.app import JsonOpt, RepoOpt, err, open_repo, print_json, run_guarded
from charhub_ops.cli.health import ConfigOpt, StateOpt, open_store

__all__ = ["capacity"]

ChartOpt = Annotated[str | None, typer.Option(
    "--chart", help="Where to write the PNG chart (default: the work dir, else the system temp dir).")]


def _report(repository: str | None, config: str | None, state: str | None, chart: str | None) -> dict:
    from datetime import UTC, datetime

    from charhub_ops.capacity.run import capacity_report, default_chart_path, inputs_from_settings
    from charhub_ops.settings import load_settings

    settings, now = load_settings(repository=repository), datetime.now(UTC)
    storage = open_repo(repository)
    inputs = inputs_from_settings(settings, config, lambda: open_store(state, shared=False, settings=settings))
    warnings: list[str] = []
    report = capacity_report(storage, inputs, now, chart or default_chart_path(settings.runs.work_dir, now),
                             warn=warnings.append)
    report["notes"] += warnings
    return report


def capacity(repository: RepoOpt = None, config: ConfigOpt = None, state: StateOpt = None, chart: ChartOpt = None,
             as_json: JsonOpt = False) -> None:
    """Growth per week of each database, its top tables and its backups; days until each disk reaches its
    critical level and until the database outgrows its disk (least squares); a PNG chart."""
    report = run_guarded(lambda: _report(repository, config, state, chart))
    if as_json:
        print_json(report)
        return
    from rich.console import Console
    from rich.markdown import Markdown

    from charhub_ops.capacity.report import render_markdown

    Console().print(Markdown(render_markdown(report)))
    err.print(f"chart: {report['chart']}", highlight=False, soft_wrap=True)
