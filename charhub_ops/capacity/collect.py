"""The series a capacity report is made of, from data the project already keeps.

* databases: every backup manifest holds ``database_size_bytes``, ``stored_size_bytes`` (the backup's size)
  and per-table ``size_bytes`` / ``rows`` — one point per backup, at its start time;
* disks: each disk check of the monitor keeps a bounded history of samples in its state
  (:class:`~charhub_ops.monitoring.state.DiskSample`, one per 6 h, 30 days); when a check has none yet,
  its paths are sampled now, here (and the report says so).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from charhub_ops.backup.manifest import Manifest, TableStat
from charhub_ops.capacity.forecast import Point
from charhub_ops.monitoring.config import DiskCheck, MonitorConfig
from charhub_ops.monitoring.state import DiskSample

__all__ = ["DatabaseSeries", "DiskSeries", "database_series", "disk_series", "table_name"]


def table_name(t: TableStat) -> str:
    """``User`` for public tables, ``schema.table`` otherwise (the cleanup policies' names)."""
    return t.name if t.schema_name == "public" else f"{t.schema_name}.{t.name}"


@dataclass
class DatabaseSeries:
    database: str
    size: list[Point] = field(default_factory=list)            # database_size_bytes per backup
    backup: list[Point] = field(default_factory=list)          # stored_size_bytes per backup
    tables: dict[str, list[Point]] = field(default_factory=dict)  # size_bytes per backup, by table
    latest: Manifest | None = None


@dataclass
class DiskSeries:
    check_id: str
    path: str
    critical_percent: float
    points: list[Point]                  # used percent over time
    total_bytes: int | None
    sampled_now: bool = False


def database_series(manifests: Iterable[Manifest], since: datetime | None = None) -> dict[str, DatabaseSeries]:
    """One series per database, oldest point first; backups started before ``since`` are left out."""
    out: dict[str, DatabaseSeries] = {}
    for m in sorted(manifests, key=lambda m: (m.started_at, m.backup_id)):
        if since is not None and m.started_at < since:
            continue
        s = out.setdefault(m.database, DatabaseSeries(m.database))
        s.size.append((m.started_at, float(m.database_size_bytes)))
        s.backup.append((m.started_at, float(m.stored_size_bytes)))
        for t in m.tables:
            s.tables.setdefault(table_name(t), []).append((m.started_at, float(t.size_bytes)))
        s.latest = m
    return out


def disk_series(cfg: MonitorConfig | None, samples: dict[str, list[DiskSample]], now: datetime,
                window_days: float) -> list[DiskSeries]:
    """One series per path of each disk check: the kept samples within the window, else one taken now."""
    if cfg is None:
        return []
    since = now - timedelta(days=window_days)
    out = []
    for check in (c for c in cfg.checks if isinstance(c, DiskCheck)):
        kept = [s for s in samples.get(check.id, []) if s.at >= since]
        fresh = not kept
        if fresh:
            kept = [sample_now(check.paths, now)]
        for path in check.paths:
            points = [(s.at, s.usage[path]) for s in kept if path in s.usage]
            total = next((s.total_bytes[path] for s in reversed(kept) if path in s.total_bytes), None)
            out.append(DiskSeries(check.id, path, check.levels[-1] if check.levels else 100.0, points, total,
                                  sampled_now=fresh))
    return out


def sample_now(paths: list[str], now: datetime) -> DiskSample:
    """The usage of ``paths`` on this machine (paths it cannot see are left out)."""
    usage, total = {}, {}
    for path in paths:
        try:
            du = shutil.disk_usage(path)
        except OSError:
            continue
        usage[path] = round(du.used / du.total * 100, 1) if du.total else 0.0
        total[path] = du.total
    return DiskSample(at=now, usage=usage, total_bytes=total)
