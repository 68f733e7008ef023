"""The capacity chart: a PNG a person can open (matplotlib, Agg backend: no display needed).

Top: each database's size and backup size per backup, with the least-squares line drawn on to
``horizon_days`` ahead. Bottom: each disk's used percent, its line, and its critical level.
matplotlib is imported here only, when a chart is drawn (it costs ~0.5 s).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from charhub_ops.capacity.collect import DatabaseSeries, DiskSeries
from charhub_ops.capacity.forecast import Point, fit
from charhub_ops.errors import OpsError

__all__ = ["render_chart"]

GIB = 1024 ** 3


def render_chart(dbs: dict[str, DatabaseSeries], disks: list[DiskSeries], now: datetime, path: str | Path,
                 horizon_days: float = 30) -> Path:
    """Draw the chart to ``path`` (PNG, parent directories created); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path = Path(path)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), dpi=80, sharex=True)
    try:
        end = now + timedelta(days=horizon_days)
        for s in dbs.values():
            _series(top, s.size, end, f"{s.database} database", GIB)
            _series(top, s.backup, end, f"{s.database} backup", GIB)
        top.set(title="Database and backup size (least-squares forecast dashed)", ylabel="GiB")
        for d in disks:
            color = _series(bottom, d.points, end, f"{d.check_id} {d.path}", 1)
            bottom.axhline(d.critical_percent, color=color, linestyle=":", linewidth=1)
        bottom.set(title="Disk usage (dotted: critical level)", ylabel="% used", ylim=(0, 100))
        for ax in (top, bottom):
            ax.axvline(now, color="grey", linewidth=0.8)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper left")
            ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    except OSError as exc:
        raise OpsError(f"capacity chart: {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
    return path


def _series(ax, points: list[Point], end: datetime, label: str, unit: float):
    """Plot the points and, when there is a line, its forecast to ``end``; returns the color used."""
    if not points:
        return None
    (drawn,) = ax.plot([t for t, _ in points], [v / unit for _, v in points], marker="o", markersize=3,
                       label=label)
    line = fit(points)
    if line is not None:
        start = points[0][0]
        ax.plot([start, end], [line.at(start) / unit, line.at(end) / unit], linestyle="--",
                color=drawn.get_color(), linewidth=1)
    return drawn.get_color()
