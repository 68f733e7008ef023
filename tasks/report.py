"""Tasks that write what a run did into Prefect artifacts (shown in the UI next to the run)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from charhub_ops.fmt import human_bytes
from charhub_ops.manifest import Manifest

__all__ = ["backup_report"]


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
