"""Thin Prefect tasks over charhub_ops.capacity: the report (read only, retried on transient errors) and
its markdown artifact.

Artifacts hold text, not files: the chart PNG is written to the work dir and, when small enough, also
embedded in the markdown artifact as a ``data:image/png;base64`` image, which the Prefect UI renders
inline. A larger chart is named by its path instead.
"""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from charhub_ops.capacity.report import render_markdown
from charhub_ops.capacity.run import CapacityInputs, capacity_report, inputs_from_settings
from charhub_ops.settings import Settings
from tasks.common import RETRY, RepoSpec
from tasks.monitor import open_state

__all__ = ["capacity_inputs", "build_capacity_report", "capacity_artifact", "EMBED_LIMIT"]

EMBED_LIMIT = 512 * 1024  # bytes of PNG embedded in the artifact; larger charts are linked by path


@task(name="capacity-inputs", cache_policy=NONE, **RETRY)
def capacity_inputs(settings: Settings, config: str | None, state: str | None) -> CapacityInputs:
    """The monitor config, its kept disk samples (state store), the cleanup policies, the window."""
    return inputs_from_settings(settings, config, lambda: open_state(settings, state))


@task(name="capacity-report", cache_policy=NONE, **RETRY)
def build_capacity_report(repo: RepoSpec, inputs: CapacityInputs, now: datetime, chart: str) -> dict:
    """The report model from the repository's manifests, and the chart PNG at ``chart``."""
    return capacity_report(repo.open(), inputs, now, chart)


def _image(chart: str | None) -> str | None:
    if not chart or not Path(chart).is_file():
        return None
    data = Path(chart).read_bytes()
    if len(data) > EMBED_LIMIT:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode()


@task(name="capacity-artifact", cache_policy=NONE)
def capacity_artifact(report: dict) -> str:
    """The markdown artifact ``capacity-report``: the chart inline, the tables, the notes, the chart's path."""
    markdown = render_markdown(report, _image(report.get("chart")))
    if report.get("chart"):
        markdown += f"\nChart file: `{report['chart']}`\n"
    create_markdown_artifact(markdown, key="capacity-report", description="charhub-ops capacity forecast")
    return markdown
