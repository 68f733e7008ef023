"""Tasks that write what a run did into Prefect artifacts (shown in the UI next to the run)."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from charhub_ops.backup.manifest import Manifest
from charhub_ops.fmt import human_bytes

__all__ = ["backup_report", "restore_plan", "check_report"]


@task(name="backup-report", cache_policy=NONE)
def backup_report(repository: str, manifests: list[Manifest], anomalies: dict[str, str]) -> str:
    """A markdown artifact: per database size, duration, throughput, checksum and anomaly flag."""
    lines = [
        f"# Backup to `{repository}`", "",
        "| database | backup id | stored | raw | duration | throughput | tables | rows | sha256 | encrypted "
        "| anomaly |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in manifests:
        secs = max(m.duration_seconds, 0.001)
        lines.append(
            f"| {m.database} | `{m.backup_id}` | {human_bytes(m.stored_size_bytes)} | {human_bytes(m.raw_size_bytes)} "
            f"| {secs:.1f} s | {human_bytes(m.raw_size_bytes / secs)}/s | {len(m.tables)} "
            f"| {sum(t.rows for t in m.tables)} | `{m.sha256[:16]}…` | {'age' if m.encrypted else 'no'} "
            f"| {'⚠ ' + anomalies[m.database] if m.database in anomalies else '—'} |")
    markdown = "\n".join(lines)
    create_markdown_artifact(markdown, key="backup-report", description="charhub-ops backup")
    return markdown


@task(name="restore-plan", cache_policy=NONE)
def restore_plan(manifest: Manifest, target: str, server: str, replace: bool, live: str | None,
                 stop: list[str], now: datetime) -> str:
    """The preview of a restore: what will be restored where, and what will be stopped."""
    age = now - manifest.finished_at
    lines = [
        f"# Restore plan: `{manifest.backup_id}` → `{target}`", "",
        "| item | value |", "|---|---|",
        f"| backup | `{manifest.backup_id}` of `{manifest.database}` |",
        f"| finished | {manifest.finished_at:%Y-%m-%d %H:%M:%S} UTC ({age.total_seconds() / 3600:.1f} h ago) |",
        f"| size | {human_bytes(manifest.stored_size_bytes)} stored, {human_bytes(manifest.raw_size_bytes)} raw |",
        f"| tables / rows | {len(manifest.tables)} / {sum(t.rows for t in manifest.tables)} |",
        f"| server | `{server}` |",
        f"| new database | `{target}` (created; must not exist) |",
    ]
    if replace:
        lines += [f"| swap | `{live}` → `{live}_pre_restore_…` (kept), `{target}` → `{live}` |",
                  f"| safety backup | of `{live}` first |",
                  f"| containers stopped | {', '.join(f'`{c}`' for c in stop) or 'none'} |"]
    markdown = "\n".join(lines)
    create_markdown_artifact(markdown, key="restore-plan", description="charhub-ops restore plan")
    return markdown


@task(name="check-report", cache_policy=NONE)
def check_report(kind: str, manifest: Manifest, target: str, ok: bool, tables: int, rows: int, hashed: int,
                 mismatches: list[str], approval: str | None = None) -> str:
    """The result of a restore or a verification drill; ``approval``: the answer to the run's approval pause
    (flows/approval.py Decision.line: approved, UTC time, reason)."""
    lines = [f"# {kind} of `{manifest.backup_id}` ({manifest.database}) into `{target}`: "
             f"{'OK' if ok else 'FAILED'}", "",
             f"{tables} tables, {rows} rows compared with the manifest; {hashed} content hashes compared.", ""]
    lines += [approval, ""] if approval else []
    lines += [f"- ✗ {m}" for m in mismatches]
    markdown = "\n".join(lines)
    create_markdown_artifact(markdown, key=f"{kind.lower()}-report", description=f"charhub-ops {kind.lower()}")
    return markdown
