"""The forecast is pure: table tests on synthetic series with known slopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from charhub_ops.capacity.forecast import TableGrowth, days_until, fit, growth_per_week, outpacing
from charhub_ops.monitoring.state import CheckState, DiskHistory, DiskSample, Probe, add_disk_sample

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def series(values: list[float], every_days: float = 1.0) -> list[tuple[datetime, float]]:
    return [(T0 + timedelta(days=i * every_days), v) for i, v in enumerate(values)]


NOISE = [0.3, -0.2, 0.1, -0.4, 0.2, 0.0, -0.1, 0.3, -0.2, 0.0]  # sums to zero, no trend of its own


@pytest.mark.parametrize(("points", "slope", "intercept"), [
    (series([10, 12, 14, 16]), 2.0, 10.0),                         # exact line
    (series([50, 50, 50]), 0.0, 50.0),                             # flat
    (series([90, 80, 70, 60]), -10.0, 90.0),                       # shrinking
    (series([0, 7], every_days=7), 1.0, 0.0),                      # two points a week apart
    (series([5, 6, 7], every_days=0.5), 2.0, 5.0),                 # half-day samples: slope stays per day
    (series([60 + 0.5 * i + n for i, n in enumerate(NOISE)]), 0.5, 60.0),  # noisy around a known line
])
def test_fit_recovers_known_slopes(points, slope, intercept):
    line = fit(points)
    assert line.slope == pytest.approx(slope, abs=0.05)
    assert line.intercept == pytest.approx(intercept, abs=0.3)
    assert line.points == len(points)


@pytest.mark.parametrize("points", [[], series([42]), [(T0, 1.0), (T0, 5.0)]])
def test_no_line_from_too_few_instants(points):
    assert fit(points) is None
    assert growth_per_week(points) is None
    assert days_until(points, 85, T0) is None


@pytest.mark.parametrize(("points", "threshold", "now", "expected"), [
    (series([70, 71, 72]), 85, T0 + timedelta(days=2), 13.0),     # +1 %/day from 72 % → 85 % in 13 days
    (series([70, 71, 72]), 85, T0 + timedelta(days=5), 10.0),     # later "now": the line moved on
    (series([10, 20, 30], every_days=7), 100, T0 + timedelta(days=14), 49.0),
    (series([50, 50, 50]), 85, T0 + timedelta(days=2), None),     # flat: never
    (series([80, 70, 60]), 85, T0 + timedelta(days=2), None),     # shrinking: never
    (series([86, 87, 88]), 85, T0 + timedelta(days=2), 0.0),      # already past
    (series([90, 90]), 85, T0 + timedelta(days=1), 0.0),          # past and flat: still "now"
    (series([70 + i + n for i, n in enumerate(NOISE)]), 85, T0 + timedelta(days=9), 6.0),  # noisy: ≈ 6 days
])
def test_days_until(points, threshold, now, expected):
    got = days_until(points, threshold, now)
    assert got == (None if expected is None else pytest.approx(expected, abs=0.3))


@pytest.mark.parametrize(("points", "per_week"), [
    (series([100, 110, 120, 130]), 70.0),
    (series([1000, 1000]), 0.0),
    (series([300, 200, 100]), -700.0),
    (series([0, 700, 1400], every_days=7), 700.0),
])
def test_growth_per_week(points, per_week):
    assert growth_per_week(points) == pytest.approx(per_week)


def test_outpacing_tables_grow_faster_than_their_share_of_the_size():
    tables = [TableGrowth("Message", 1000, 600.0),        # 60 % of growth, 25 % of size: outpaces
              TableGrowth("User", 2000, 300.0),           # 30 % of growth, 50 % of size
              TableGrowth("Log", 900, 90.0),              # 9 % / 22.5 %
              TableGrowth("Tiny", 100, 10.0),             # 1 % of growth, 2.5 % of size
              TableGrowth("New", 0, None)]                # one backup only: no growth known
    found = outpacing(tables)
    assert [(t.name, round(g, 2), round(s, 3)) for t, g, s in found] == [("Message", 0.6, 0.25)]


@pytest.mark.parametrize("tables", [
    [TableGrowth("A", 100, 0.0), TableGrowth("B", 100, 0.0)],        # nothing grows
    [TableGrowth("A", 100, -50.0), TableGrowth("B", 100, -10.0)],    # all shrinking
    [TableGrowth("A", 100, 10.0), TableGrowth("B", 100, 10.0)],      # in step with their size
    [],
])
def test_nothing_outpaces(tables):
    assert outpacing(tables) == []


def test_outpacing_ignores_a_sliver_of_the_growth():
    tables = [TableGrowth("Big", 10_000, 990.0), TableGrowth("Small", 1, 10.0)]  # Small: 1 % of the growth
    assert [t.name for t, _, _ in outpacing(tables, min_share=0.05)] == []
    assert [t.name for t, _, _ in outpacing(tables, min_share=0.0)] == ["Small"]


def test_disk_samples_are_spaced_and_bounded():
    history = DiskHistory()
    for minute in range(0, 60 * 24 * 3, 1):  # a monitor pass each minute for 3 days
        history = add_disk_sample(history, DiskSample(at=T0 + timedelta(minutes=minute), usage={"/": 50.0}),
                                  every=6 * 3600, keep=10)
    samples = history.samples()
    assert len(samples) == 10
    gaps = {(b.at - a.at).total_seconds() for a, b in zip(samples, samples[1:], strict=False)}
    assert gaps == {6 * 3600}
    assert samples[-1].at == T0 + timedelta(hours=66)  # the newest kept, the oldest dropped


def test_a_path_added_later_has_gaps_and_a_removed_one_ages_out():
    history = DiskHistory()
    for day, usage in enumerate([{"/": 50.0}, {"/": 51.0, "/data": 10.0}, {"/data": 11.0}]):
        history = add_disk_sample(history, DiskSample(at=T0 + timedelta(days=day), usage=usage,
                                                      total_bytes={p: 1000 for p in usage}), keep=2)
    assert history.usage == {"/": [51.0, None], "/data": [10.0, 11.0]}
    assert [s.usage for s in history.samples()] == [{"/": 51.0, "/data": 10.0}, {"/data": 11.0}]


@pytest.mark.parametrize("paths", [1, 3, 10])
def test_a_full_disk_history_fits_a_prefect_variable(paths):
    """The history shares the check's Variable (5,000 characters; compressed when longer): many paths keep
    fewer samples, so a full history never makes the monitor's state too large to save."""
    import json

    from charhub_ops.monitoring.variables import pack

    names = [f"/srv/volume-{i:02d}/data" for i in range(paths)]
    history = DiskHistory()
    for i in range(200):
        usage = {p: round(40 + (i * 37 + n * 11) % 500 / 10, 1) for n, p in enumerate(names)}  # varied values
        history = add_disk_sample(history, DiskSample(at=T0 + timedelta(hours=6 * i, seconds=i * 7), usage=usage,
                                                      total_bytes={p: 10 ** 12 + i for p in names}))
    detail = ", ".join(f"{p} 77.7 %" for p in names) + "; past the warn level"
    state = CheckState(check_id="disk", disk_history=history, probes=[Probe(at=T0, ok=False, detail=detail)] * 10)
    assert len(json.dumps(pack(state.model_dump(mode="json")))) < 5000
    assert len(history.times) == min(120, 480 // paths)


def test_capacity_core_imports_neither_prefect_nor_matplotlib():
    """Core stays free of Prefect; matplotlib (~0.5 s) is imported only when a chart is drawn."""
    import subprocess
    import sys

    code = ("import sys, charhub_ops.capacity.run, charhub_ops.cli.capacity; "
            "print('prefect' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
