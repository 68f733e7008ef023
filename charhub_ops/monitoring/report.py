"""The incident report in CharHub's template (docs/06-operations/incident-response/YYYY-MM-DD-<slug>.md),
written atomically (temp file → fsync → rename → fsync of the directory) and rewritten on recovery.

Header: Date, Severity, Duration, Status. Sections: Summary, Timeline (real UTC times), Detection, Root Cause
(preliminary: the diagnosis facts), Resolution, Impact Analysis, Action Items (Immediate / Short-term /
Long-term), Lessons Learned, Related Documents; plus the maintenance windows in force, and the diagnosis
details (kept as they were when the report is rewritten).
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

from charhub_ops.errors import ConfigError, OpsError
from charhub_ops.monitoring.incident_model import RESPONSE_TARGET, Incident, duration_text, resolve

__all__ = ["report_path", "render_report", "write_report", "details_of", "resolve_by_hand"]

DETAILS = "## Diagnosis details"


def report_path(incident_dir: str, inc: Incident) -> Path:
    return Path(incident_dir) / f"{inc.opened_at:%Y-%m-%d}-{inc.check_id}-down-{inc.opened_at:%H%M%S}.md"


def _t(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at else "—"


def _resolution(inc: Incident) -> list[str]:
    lines = [f"- `{a.action}` {'ran' if a.ran else 'NOT RUN'}: {'ok' if a.ok else 'failed'} — {a.detail}"
             for a in inc.actions] or ["- no mitigation was available for this check"]
    if inc.status == "escalated":
        lines.append(f"- **Escalated**: mitigation did not restore the service; {inc.escalated_to} must act.")
    if inc.status == "resolved":
        lines.append(f"- Recovered at {_t(inc.resolved_at)} (the check passed its recovery threshold).")
    return lines


def render_report(inc: Incident, now: datetime, details: str = "") -> str:
    status = {"open": "Open", "mitigated": "Mitigated (awaiting recovery)", "escalated": "Escalated",
              "resolved": "Resolved"}[inc.status]
    timeline = [f"| {_t(e.at)} | {e.what.replace('|', '/')} |" for e in inc.timeline]
    windows = [f"- {w}" for w in inc.maintenance] or ["- none in force"]
    ran = [a for a in inc.actions if a.ran]
    parts = [
        f"# Incident: {inc.title}", "",
        f"**Date**: {inc.opened_at:%Y-%m-%d}  ",
        f"**Severity**: {inc.severity.capitalize()} (respond {RESPONSE_TARGET[inc.severity]})  ",
        f"**Duration**: {duration_text(inc, now)}  ", f"**Status**: {status}  ", f"**Incident id**: `{inc.id}`", "",
        "## Summary", "",
        f"Check `{inc.check_id}` failed: {inc.detail}. Detected at {_t(inc.detected_at)} after consecutive failed "
        f"probes; {len(ran)} mitigation(s) ran; status {status.lower()}.", "",
        "## Timeline", "", "| time (UTC) | event |", "|---|---|", *timeline, "",
        "## Detection", "",
        f"- First failed probe: {_t(inc.first_failure_at)}", f"- Detected (threshold reached): {_t(inc.detected_at)}",
        f"- `down` events for this incident: {inc.downs} (later ones attached, no second incident)", "",
        "## Root Cause", "", "_Preliminary — facts from the automatic diagnosis; confirm before closing._", "",
        *[f"- {line}" for line in inc.diagnosis or ["no diagnosis yet"]], "",
        "## Resolution", "", *_resolution(inc), "",
        "## Impact Analysis", "",
        f"- Outage duration: {duration_text(inc, now)}", f"- Failed probes: {inc.failed_probes}",
        f"- Severity: {inc.severity}", "",
        "## Maintenance windows", "", *windows, "",
        "## Action Items", "", "### Immediate", "",
        f"- [{'x' if inc.status == 'resolved' else ' '}] Service restored for `{inc.check_id}`", "",
        "### Short-term", "", "- [ ] Confirm the root cause and update this report", "",
        "### Long-term", "", "- [ ] Prevention: adjust the runbook / checks if this can recur", "",
        "## Lessons Learned", "", "- _to be written in the review_", "",
        "## Related Documents", "", "- Monitoring and incidents: charhub-ops docs/pipelines/monitoring.md", "",
    ]
    if details:
        parts += [DETAILS, "", details.strip(), ""]
    return "\n".join(parts)


def details_of(path: Path) -> str:
    """The diagnosis details of an existing report ('' if none)."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    return text.split(DETAILS, 1)[1].strip() if DETAILS in text else ""


def write_report(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; OpsError (permanent) if the directory cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise OpsError(f"incident report {path}: {exc.strerror or exc}") from exc
    return path


def resolve_by_hand(store, incident_id: str, now: datetime, by: str, reason: str) -> Incident:
    """Close incident ``incident_id`` of ``store`` (a MonitorState) by hand — its check's slot frees, so the
    next outage opens a new incident — and rewrite its report when the file is here. ConfigError when it
    does not exist or is already resolved."""
    inc = store.incident(incident_id)
    if inc is None:
        raise ConfigError(f"incident {incident_id}: not found (see `charhub-ops incident list`)")
    if inc.status == "resolved":
        raise ConfigError(f"incident {incident_id}: already resolved at {inc.resolved_at:%Y-%m-%d %H:%M:%S} UTC")
    inc = resolve(inc, now, why=f"resolved by hand by {by or 'unknown'}: {reason}")
    if inc.report and Path(inc.report).exists():
        write_report(Path(inc.report), render_report(inc, now, details_of(Path(inc.report))))
    store.save_incident(inc)
    return inc
