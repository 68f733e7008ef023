"""Pure forecasting: least-squares lines over (time, value) points, growth per week, days to a threshold,
and the tables whose growth outpaces the rest. No clock (``now`` is an argument), no I/O.

Time is measured in days from the first point, so slopes are "per day"; a week is 7 of them.
A forecast is None when it cannot be made honestly: fewer than two points (or all at one instant),
or a line that is flat or falling (the threshold is never reached).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Point", "Line", "fit", "growth_per_week", "days_until", "TableGrowth", "outpacing"]

Point = tuple[datetime, float]
DAY = 86400.0


@dataclass(frozen=True)
class Line:
    """value ≈ intercept + slope × (days since ``origin``)."""

    origin: datetime
    slope: float       # per day
    intercept: float
    points: int

    def at(self, when: datetime) -> float:
        return self.intercept + self.slope * (when - self.origin).total_seconds() / DAY


def fit(points: Sequence[Point]) -> Line | None:
    """The least-squares line through ``points``; None for fewer than two distinct instants."""
    if len(points) < 2:
        return None
    origin = min(t for t, _ in points)
    xs = [(t - origin).total_seconds() / DAY for t, _ in points]
    ys = [float(v) for _, v in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    return Line(origin, slope, mean_y - slope * mean_x, len(points))


def growth_per_week(points: Sequence[Point]) -> float | None:
    """The fitted change per 7 days (negative when shrinking); None without a line."""
    line = fit(points)
    return None if line is None else line.slope * 7


def days_until(points: Sequence[Point], threshold: float, now: datetime) -> float | None:
    """Days from ``now`` until the fitted line reaches ``threshold``: 0 when it is there already; None when
    there is no line, or it is below and flat or falling (never reached)."""
    line = fit(points)
    if line is None:
        return None
    if line.at(now) >= threshold:
        return 0.0
    return None if line.slope <= 0 else (threshold - line.at(now)) / line.slope


@dataclass(frozen=True)
class TableGrowth:
    name: str
    size_bytes: int
    growth_bytes_per_week: float | None


def outpacing(tables: Sequence[TableGrowth], min_share: float = 0.05) -> list[tuple[TableGrowth, float, float]]:
    """Tables growing faster than the rest, largest growth first, each with (growth share, size share):
    a table outpaces when its share of the growth is above its share of the size (its relative growth
    is above the database's) and it brings at least ``min_share`` of the growth. Nothing when the
    tables together are not growing."""
    total_size = sum(t.size_bytes for t in tables)
    total_growth = sum(t.growth_bytes_per_week or 0.0 for t in tables)
    if total_growth <= 0 or total_size <= 0:
        return []
    found = []
    for t in tables:
        growth = t.growth_bytes_per_week or 0.0
        growth_share, size_share = growth / total_growth, t.size_bytes / total_size
        if growth > 0 and growth_share >= min_share and growth_share > size_share:
            found.append((t, growth_share, size_share))
    return sorted(found, key=lambda f: f[0].growth_bytes_per_week or 0.0, reverse=True)
