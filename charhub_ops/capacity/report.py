"""The capacity report: one JSON model (``charhub-ops capacity --json``) and its markdown rendering.

Model: ``databases`` (``size_bytes``, ``growth_bytes_per_week``, ``top_tables``, backup size trend, weeks,
``days_to_outgrow_disk``, ``outpacing``), ``disks`` (``used_percent``, ``days_to_critical``), ``chart``,
``notes``, and ``pitr`` (pgBackRest's repository size and backups, None without ``pitr_repository``;
set by :func:`charhub_ops.capacity.run.capacity_report`). Growth is the least-squares slope over the window
(:mod:`.forecast`); None where it cannot be told (one backup, one sample). Pure: the clock is an argument.
"""

from __future__ import annotations

from datetime import datetime

from charhub_ops.capacity.collect import DatabaseSeries, DiskSeries, table_name
from charhub_ops.capacity.forecast import TableGrowth, days_until, fit, growth_per_week, outpacing
from charhub_ops.fmt import human_bytes

__all__ = ["build_report", "render_markdown", "TOP_TABLES"]

TOP_TABLES = 10


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def build_report(dbs: dict[str, DatabaseSeries], disks: list[DiskSeries], now: datetime, *,
                 policies: dict[str, str] | None = None, database_disk: str | None = None,
                 window_days: float = 90, chart: str | None = None) -> dict:
    """The report's JSON model. ``policies``: table name → the cleanup policy covering it;
    ``database_disk``: the path whose free space the databases grow into (default: the first disk)."""
    disk_rows = [_disk(d, now) for d in disks]
    home = next((d for d in disks if d.path == database_disk), disks[0] if disks else None)
    notes = [f"{d.check_id} {d.path}: no kept samples yet (the monitor keeps one per 6 h); sampled now"
             for d in disks if d.sampled_now]
    notes += [f"{d.check_id} {d.path}: not visible from this machine" for d in disks if not d.points]
    if database_disk and (home is None or home.path != database_disk):
        notes.append(f"database disk {database_disk}: not among the disk checks' paths")
    return {"generated_at": _iso(now), "window_days": window_days,
            "databases": [_database(s, now, policies or {}, home) for s in dbs.values()],
            "disks": disk_rows, "chart": chart, "notes": notes}


def _database(s: DatabaseSeries, now: datetime, policies: dict[str, str], home: DiskSeries | None) -> dict:
    latest = s.latest
    growth = growth_per_week(s.size)
    tables = [TableGrowth(table_name(t), t.size_bytes, growth_per_week(s.tables.get(table_name(t), [])))
              for t in latest.tables]
    rows = {table_name(t): t.rows for t in latest.tables}
    top = sorted(tables, key=lambda t: (t.growth_bytes_per_week or 0.0, t.size_bytes), reverse=True)[:TOP_TABLES]
    return {
        "database": s.database, "size_bytes": latest.database_size_bytes,
        "growth_bytes_per_week": _round(growth), "backups": len(s.size),
        "first_backup": _iso(s.size[0][0]), "last_backup": _iso(latest.started_at),
        "backup_size_bytes": latest.stored_size_bytes,
        "backup_growth_bytes_per_week": _round(growth_per_week(s.backup)),
        "disk": home.path if home else None, "days_to_outgrow_disk": _round(_outgrow(growth, home)),
        "weeks": _weeks(s),
        "top_tables": [{"table": t.name, "size_bytes": t.size_bytes, "rows": rows[t.name],
                        "growth_bytes_per_week": _round(t.growth_bytes_per_week),
                        "cleanup_policy": policies.get(t.name)} for t in top],
        "outpacing": [{"table": t.name, "growth_bytes_per_week": _round(t.growth_bytes_per_week),
                       "growth_share": round(g, 3), "size_share": round(z, 3), "cleanup_policy": policies.get(t.name)}
                      for t, g, z in outpacing(tables)],
    }


def _outgrow(growth_per_week: float | None, disk: DiskSeries | None) -> float | None:
    """Days until the database's growth alone fills the free space of its disk (at its latest sample)."""
    if not growth_per_week or growth_per_week <= 0 or disk is None or not disk.points or not disk.total_bytes:
        return None
    free = disk.total_bytes * (1 - disk.points[-1][1] / 100)
    return max(0.0, free) / (growth_per_week / 7)


def _weeks(s: DatabaseSeries) -> list[dict]:
    """The last backup of each ISO week: database and backup size."""
    last: dict[str, tuple[float, float]] = {}
    for (t, size), (_, stored) in zip(s.size, s.backup, strict=True):
        year, week, _ = t.isocalendar()
        last[f"{year}-W{week:02d}"] = (size, stored)
    return [{"week": w, "size_bytes": int(a), "backup_size_bytes": int(b)} for w, (a, b) in last.items()]


def _disk(d: DiskSeries, now: datetime) -> dict:
    line = fit(d.points)
    return {"check": d.check_id, "path": d.path, "used_percent": d.points[-1][1] if d.points else None,
            "critical_percent": d.critical_percent, "total_bytes": d.total_bytes,
            "growth_percent_per_week": _round(line.slope * 7 if line else None, 2),
            "days_to_critical": _round(days_until(d.points, d.critical_percent, now)),
            "samples": len(d.points), "sampled_now": d.sampled_now}


def _bytes(n: float | None, per_week: bool = False) -> str:
    if n is None:
        return "—"
    sign = "+" if per_week and n > 0 else "-" if n < 0 else ""
    return sign + human_bytes(abs(n)) + ("/week" if per_week else "")


def _days(n: float | None) -> str:
    return "not growing" if n is None else f"{n:.0f} days" if n >= 1 else "now"


def render_markdown(report: dict, image: str | None = None) -> str:
    """A markdown page: databases, backups, disks, fast-growing tables; ``image``: an image URL or data URI."""
    lines = [f"# Capacity forecast ({report['generated_at'][:16].replace('T', ' ')} UTC, "
             f"least squares over {report['window_days']:g} days)", ""]
    if image:
        lines += [f"![capacity chart]({image})", ""]
    lines += ["| database | size | growth | backup size | backup growth | backups | outgrows disk in |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {d['database']} | {_bytes(d['size_bytes'])} | {_bytes(d['growth_bytes_per_week'], True)} "
              f"| {_bytes(d['backup_size_bytes'])} | {_bytes(d['backup_growth_bytes_per_week'], True)} "
              f"| {d['backups']} | {_outgrow_cell(d)} |"
              for d in report["databases"]]
    lines += _pitr_md(report.get("pitr"))
    if report["disks"]:
        lines += ["", "| disk | used | critical | growth | critical in |", "|---|---|---|---|---|"]
    lines += [f"| {d['check']} `{d['path']}` | {_pct(d['used_percent'])} | {d['critical_percent']:g} % "
              f"| {_pct(d['growth_percent_per_week'], '/week')} | {_days(d['days_to_critical'])} |"
              for d in report["disks"]]
    for d in report["databases"]:
        lines += _tables_md(d)
    lines += [f"- note: {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _pitr_md(p: dict | None) -> list[str]:
    """The physical backups (pgBackRest) beside the logical ones: repository size and backup count."""
    if not p:
        return []
    counts = ", ".join(f"{n} {kind}" for kind, n in p["by_type"].items() if n)
    return ["", "| physical backups (pgBackRest) | repository size | backups | cluster size | newest | WAL |",
            "|---|---|---|---|---|---|",
            f"| stanza {p['stanza']} in `{p['repository']}` | {_bytes(p['repository_size_bytes'])} "
            f"| {p['backups']} ({counts or 'none'}) | {_bytes(p['cluster_size_bytes'])} "
            f"| {(p['newest_at'] or '—')[:16].replace('T', ' ')} | `{p['wal_min']}` … `{p['wal_max']}` |"]


def _outgrow_cell(d: dict) -> str:
    if d["growth_bytes_per_week"] is None:
        return "— (one backup)"
    return _days(d["days_to_outgrow_disk"]) if d["disk"] else "no disk known"


def _pct(value: float | None, suffix: str = "") -> str:
    return "—" if value is None else f"{value:g} %{suffix}"


def _tables_md(d: dict) -> list[str]:
    lines = ["", f"## {d['database']}: top tables by growth", "",
             "| table | size | rows | growth | outpacing | cleanup policy |", "|---|---|---|---|---|---|"]
    if not d["top_tables"]:
        return lines[:3] + ["No per-table sizes in these backups' manifests."]
    fast = {o["table"] for o in d["outpacing"]}
    lines += [f"| {t['table']} | {_bytes(t['size_bytes'])} | {t['rows']} | {_bytes(t['growth_bytes_per_week'], True)} "
              f"| {'yes' if t['table'] in fast else ''} | {t['cleanup_policy'] or '—'} |" for t in d["top_tables"]]
    lines += [f"- **{o['table']}** brings {o['growth_share']:.0%} of the growth with {o['size_share']:.0%} of the "
              f"size: {_covered(o['cleanup_policy'])}" for o in d["outpacing"]]
    return lines


def _covered(policy: str | None) -> str:
    return f"covered by cleanup policy {policy}" if policy else "no cleanup policy covers it"
