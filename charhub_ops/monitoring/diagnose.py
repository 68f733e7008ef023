"""The diagnosis bundle of an incident: facts gathered once, every one redacted, rendered as markdown.

Sections: the container (status, restart count, last log lines), PostgreSQL (sessions, blocking chains,
long queries, idle transactions), WAL archiving (an archive check: the ``pg_stat_archiver`` row), disk usage,
the check's recent probes and events, recent flow runs (deployments, migrations, backups: recent changes are
the first suspect). A section that cannot be gathered says why.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from charhub_ops.errors import OpsError
from charhub_ops.monitoring import pgfacts
from charhub_ops.monitoring.archive import archiver_markdown, read_archiver
from charhub_ops.monitoring.dockerfacts import container_env_values, container_facts, container_logs
from charhub_ops.monitoring.redact import redact
from charhub_ops.monitoring.state import CheckState
from charhub_ops.pgurl import parse_pg_url
from charhub_ops.postgres import open_session

__all__ = ["diagnose", "summary_lines"]


def _guard(func: Callable[[], str]) -> str:
    try:
        return func()
    except OpsError as exc:
        return f"_not available: {exc}_"


def _container(name: str, lines: int) -> str:
    f = container_facts(name)
    head = (f"`{name}`: {f['status']}, health {f['health'] or 'n/a'}, restarts {f['restart_count']}, exit code "
            f"{f['exit_code']}, started {f['started_at']}, OOM-killed {f['oom_killed']}, image {f['image']}")
    logs = redact(container_logs(name, lines), container_env_values(name)).rstrip() if lines else ""
    return head + (f"\n\nLast {lines} log lines:\n\n```\n{logs or '(none)'}\n```" if lines else "")


def _postgres(url: str) -> str:
    rows, total, maximum = pgfacts.sessions(url)
    out = [f"{total} connections of max_connections {maximum}", "",
           "| pid | user | application | state | wait | query s | in state s | blocked by | query |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows[:30]:
        query = " ".join((r["query"] or "").split()).replace("|", "\\|")
        app = f"{r['application']} (ours)" if pgfacts.is_ours(r) else r["application"]
        out.append(f"| {r['pid']} | {r['user']} | {app} | {r['state']} | {r['wait'] or '—'} "
                   f"| {r['query_s']:.1f} | {r['state_s']:.1f} | {', '.join(map(str, r['blocked_by'])) or '—'} "
                   f"| `{query[:120]}` |")
    chains = [f"- pid {r['pid']} waits for {', '.join(map(str, r['blocked_by']))} ({r['query_s']:.0f} s)"
              for r in rows if r["blocked_by"]]
    return "\n".join(out + ["", "Blocking chains:", *(chains or ["- none"])])


def _archiver(url: str, container: str | None) -> str:
    with open_session(parse_pg_url(url), container) as session:
        return archiver_markdown(read_archiver(session))


def _disk(paths: list[str]) -> str:
    out = []
    for path in dict.fromkeys(paths):
        du = shutil.disk_usage(path)
        out.append(f"- `{path}`: {du.used / du.total:.1%} used, {du.free / 2**30:.2f} GiB free of "
                   f"{du.total / 2**30:.2f} GiB")
    return "\n".join(out)


def _probes(state: CheckState) -> str:
    rows = [f"- {p.at:%H:%M:%S} UTC {'ok' if p.ok else 'FAIL'}"
            + (f" {p.latency_ms:.0f} ms" if p.latency_ms is not None else "") + f" — {p.detail}"
            for p in state.probes]
    return "\n".join([f"streak: {state.fail_streak} failures / {state.pass_streak} passes, status {state.status}",
                      *rows])


def _runs(runs: list[dict]) -> str:
    if not runs:
        return "none found"
    return "\n".join(f"- {r['start']} `{r['flow']}` / {r['name']}: {r['state']}"
                     + (f" (deployment {r['deployment']})" if r.get("deployment") else "") for r in runs)


def _events(events: list[dict]) -> str:
    return "\n".join(f"- {e['at']} UTC `{e['event']}` — {e['detail']}" for e in events) or "none found"


def diagnose(check, state: CheckState, *, database_url: str | None, log_lines: int, recent_runs: list[dict],
             secrets: list[str], recent_events: list[dict] | None = None) -> dict[str, str]:
    """Markdown sections by title, redacted."""
    sections: dict[str, str] = {}
    if check.container:
        sections["Container"] = _guard(lambda: _container(check.container, log_lines))
    if database_url:
        sections["PostgreSQL"] = _guard(lambda: _postgres(database_url))
    if database_url and check.type == "archive":
        sections["WAL archiving"] = _guard(lambda: _archiver(database_url, check.database_container))
    paths = ["/", *getattr(check, "paths", [])]
    sections["Disk"] = _guard(lambda: _disk(paths))
    sections["Recent probes"] = _probes(state)
    sections["Recent events"] = _events(recent_events or [])
    sections["Recent flow runs (recent changes)"] = _runs(recent_runs)
    return {title: redact(text, secrets) for title, text in sections.items()}


def summary_lines(sections: dict[str, str]) -> list[str]:
    """The first line of each section: the preliminary root-cause facts."""
    return [f"{title}: {text.strip().splitlines()[0].removeprefix('- ') if text.strip() else '—'}"
            for title, text in sections.items()]
