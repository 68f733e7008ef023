"""The capacity report end to end, shared by ``charhub-ops capacity`` and the ``capacity`` flow:
inputs (manifests, disk samples, cleanup policies) → series → report model → chart."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from charhub_ops.backup.catalog import list_backups
from charhub_ops.capacity.chart import render_chart
from charhub_ops.capacity.collect import database_series, disk_series
from charhub_ops.capacity.report import build_report
from charhub_ops.monitoring.config import DiskCheck, MonitorConfig, load_config
from charhub_ops.monitoring.state import DiskSample
from charhub_ops.monitoring.store import MonitorState
from charhub_ops.storage import Storage

__all__ = ["CapacityInputs", "disk_samples", "load_policies", "monitor_config", "inputs_from_settings",
           "capacity_report", "default_chart_path"]


@dataclass
class CapacityInputs:
    """What the report reads besides the repository."""

    monitor: MonitorConfig | None = None          # its disk checks; None: no disks in the report
    samples: dict[str, list[DiskSample]] | None = None  # check id → kept samples
    policies: dict[str, str] | None = None        # table → covering cleanup policy
    database_disk: str | None = None
    window_days: float = 90
    notes: list[str] | None = None
    pitr: dict | None = None                      # pgBackRest's repository (charhub_ops.pitr.catalog.pitr_usage)


def monitor_config(path: str) -> tuple[MonitorConfig | None, list[str]]:
    """The monitor config at ``path`` and notes; a missing file means no disks (a note says so)."""
    if not Path(path).exists():
        return None, [f"monitor config {path}: not found, so no disks in the report"]
    return load_config(path), []


def disk_samples(state: MonitorState, cfg: MonitorConfig | None) -> dict[str, list[DiskSample]]:
    """The kept disk samples of every disk check, by check id."""
    if cfg is None:
        return {}
    return {c.id: state.check(c.id).disk_history.samples() for c in cfg.checks if isinstance(c, DiskCheck)}


def load_policies(path: str | None) -> dict[str, str]:
    """Table name → ``"older_than 90d on createdAt"`` for each row policy in the cleanup policy file."""
    if not path:
        return {}
    from charhub_ops.cleanup.policy import load_policy_file

    return {p.name: f"older_than {p.older_than} on {p.timestamp_column}" for p in load_policy_file(path).policies}


def inputs_from_settings(settings, config: str | None, open_state: Callable[[], MonitorState]) -> CapacityInputs:
    """The inputs the settings name: the monitor config (``config`` or setting monitor_config), the disk
    samples in the state store ``open_state`` returns (opened only when there are disk checks), the cleanup
    policy file, the window, the database disk and, when ``pitr_repository`` is set, pgBackRest's repository
    (size and backups from its ``info``; a note when pgBackRest cannot answer)."""
    from charhub_ops.pitr.catalog import pitr_usage

    cfg, notes = monitor_config(config or settings.monitor.config)
    pitr = pitr_usage(settings, notes.append)
    has_disks = cfg is not None and any(isinstance(c, DiskCheck) for c in cfg.checks)
    return CapacityInputs(monitor=cfg, samples=disk_samples(open_state(), cfg) if has_disks else {},
                          policies=load_policies(settings.cleanup.policy_file),
                          database_disk=settings.capacity.database_disk,
                          window_days=settings.capacity.window_days, notes=notes, pitr=pitr)


def default_chart_path(work_dir: str | None, now: datetime) -> Path:
    return Path(work_dir or tempfile.gettempdir()) / f"charhub-capacity-{now:%Y%m%dT%H%M%SZ}.png"


def capacity_report(storage: Storage, inputs: CapacityInputs, now: datetime, chart_path: str | Path | None,
                    warn=None) -> dict:
    """The report model; the chart is drawn to ``chart_path`` (None: no chart)."""
    since = now - timedelta(days=inputs.window_days)
    dbs = database_series(list_backups(storage, warn=warn), since)
    disks = disk_series(inputs.monitor, inputs.samples or {}, now, inputs.window_days)
    chart = str(render_chart(dbs, disks, now, chart_path)) if chart_path else None
    report = build_report(dbs, disks, now, policies=inputs.policies, database_disk=inputs.database_disk,
                          window_days=inputs.window_days, chart=chart)
    report["repository"] = storage.url
    report["pitr"] = inputs.pitr
    report["notes"] = (inputs.notes or []) + report["notes"]
    if not dbs:
        report["notes"].append(f"no backups in {storage.url} within {inputs.window_days:g} days")
    return report
