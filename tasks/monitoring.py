"""Thin Prefect tasks over charhub_ops.monitoring: the state store on the Prefect server, probes, events,
diagnosis, mitigations, reports.

State lives in Prefect Variables (``VariableStore``) when a server is configured: monitor runs land on
different workers, and the server is the one place they all see. Setting ``monitor_state`` chooses, by the
one rule of ``charhub_ops.monitoring.store.resolve_state`` (``auto`` without a server: the repository for
the monitor pass's own streaks, one error line for windows and incidents).
"""

from __future__ import annotations

import base64
import json
import zlib
from datetime import UTC, datetime
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import VariableCreate, VariableUpdate
from prefect.client.schemas.sorting import FlowRunSort

from charhub_ops.errors import ConfigError
from charhub_ops.monitoring.checks import CheckContext, CheckResult, run_check
from charhub_ops.monitoring.diagnose import diagnose
from charhub_ops.monitoring.incident_model import Incident
from charhub_ops.monitoring.report import details_of, render_report, report_path, write_report
from charhub_ops.monitoring.runner import context_for
from charhub_ops.monitoring.state import CheckState
from charhub_ops.monitoring.store import MonitorState, repository_state
from charhub_ops.settings import Settings

__all__ = ["VariableStore", "open_state", "check_context", "probe", "diagnose_incident",
           "recent_flow_runs", "recent_check_events", "write_incident_report", "utcnow"]

_PREFIX = "charhub-ops-mon-"
_ZIP = "zlib+base64"
_LIMIT = 4800  # a Variable's JSON must stay under 5,000 characters


def _pack(value: dict) -> dict:
    """``value``, or its compressed form when its JSON would not fit in a Variable; ConfigError if even that
    does not fit (never a silent truncation)."""
    text = json.dumps(value, default=str)
    if len(text) <= _LIMIT:
        return value
    packed = {_ZIP: base64.b64encode(zlib.compress(text.encode(), 9)).decode()}
    if len(packed[_ZIP]) > _LIMIT:
        raise ConfigError(f"monitor state: a value of {len(text)} characters does not fit in a Prefect Variable "
                          "even compressed (use CHARHUB_OPS_MONITOR_STATE=repository)")
    return packed


def _unpack(value: dict) -> dict:
    return json.loads(zlib.decompress(base64.b64decode(value[_ZIP])))


def utcnow() -> datetime:
    return datetime.now(UTC)


class VariableStore:
    """A StateStore in Prefect Variables: key ``check/web`` → Variable ``charhub-ops-mon-check__web``."""

    page = 200

    def _name(self, key: str) -> str:
        return _PREFIX + key.replace("/", "__")

    def get(self, key: str) -> dict | None:
        with get_client(sync_client=True) as client:
            var = client.read_variable_by_name(self._name(key))
        if var is None:
            return None
        return _unpack(var.value) if isinstance(var.value, dict) and set(var.value) == {_ZIP} else var.value

    def put(self, key: str, value: dict) -> None:
        name, value = self._name(key), _pack(value)
        with get_client(sync_client=True) as client:
            if client.read_variable_by_name(name) is None:
                client.create_variable(VariableCreate(name=name, value=value, tags=["charhub-ops-monitor"]))
            else:
                client.update_variable(VariableUpdate(name=name, value=value))

    def delete(self, key: str) -> None:
        with get_client(sync_client=True) as client:
            if client.read_variable_by_name(self._name(key)) is not None:
                client.delete_variable_by_name(self._name(key))

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, read page by page (the API returns at most a page per request)."""
        start, names, offset = self._name(prefix), [], 0
        with get_client(sync_client=True) as client:
            while True:
                page = client.request("POST", "/variables/filter", json={
                    "variables": {"name": {"like_": start}}, "offset": offset, "limit": self.page}).json()
                names += [v["name"] for v in page]
                if len(page) < self.page:
                    break
                offset += self.page
        return [n.removeprefix(_PREFIX).replace("__", "/") for n in names if n.startswith(start)]


def open_state(settings: Settings, spec: str | None = None, shared: bool = True) -> MonitorState:
    """The store named by ``spec`` (default: setting monitor_state): auto | prefect | repository | URL, by
    the one rule of charhub_ops.monitoring.store.resolve_state (``shared``: windows and incidents the workers
    must see — ``auto`` without a server fails with one line)."""
    from charhub_ops.monitoring.store import prefect_server_configured

    return (repository_state(settings, spec, prefect_server_configured(), shared)
            or MonitorState(VariableStore()))


def _bearer(check) -> str | None:
    name = getattr(check, "bearer_secret", None)
    if not name:
        return None
    from prefect.blocks.system import Secret

    return Secret.load(name).get()


def check_context(check, settings: Settings, state: CheckState, now: datetime) -> CheckContext:
    """The probe's context, with the Bearer token read from its Prefect Secret block (never a parameter)."""
    return context_for(check, settings, state, now, _bearer(check))


@task(name="probe-check", cache_policy=NONE, task_run_name="probe-{check.id}")
def probe(check, ctx: CheckContext) -> CheckResult:
    return run_check(check, ctx)


@task(name="recent-flow-runs", cache_policy=NONE)
def recent_flow_runs(limit: int = 10) -> list[dict]:
    """The latest flow runs (deployments, migrations, backups): recent changes are the first suspect."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=limit)
        flows = {f.id: f.name for f in client.read_flows()}
    return [{"start": f"{r.start_time:%Y-%m-%d %H:%M:%S}" if r.start_time else "not started",
             "flow": flows.get(r.flow_id, "?"), "name": r.name, "state": r.state_name,
             "deployment": str(r.deployment_id) if r.deployment_id else None} for r in runs]


@task(name="recent-check-events", cache_policy=NONE)
def recent_check_events(check_id: str, limit: int = 15) -> list[dict]:
    """The latest events of ``charhub.check.<id>`` from the server, newest first (payloads are redacted)."""
    from prefect.events.filters import EventFilter, EventResourceFilter

    only = EventFilter(resource=EventResourceFilter(id=[f"charhub.check.{check_id}"]))
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=only, limit=limit)
    return [{"at": f"{e.occurred:%Y-%m-%d %H:%M:%S}", "event": e.event, "detail": str(e.payload.get("detail", ""))}
            for e in page.events]


@task(name="diagnose", cache_policy=NONE)
def diagnose_incident(check, state: CheckState, ctx: CheckContext, log_lines: int, runs: list[dict],
                      events: list[dict]) -> dict[str, str]:
    return diagnose(check, state, database_url=ctx.database_url, log_lines=log_lines, recent_runs=runs,
                    recent_events=events, secrets=ctx.secrets)


@task(name="write-incident-report", cache_policy=NONE)
def write_incident_report(incident_dir: str, inc: Incident, details: dict[str, str] | None) -> str:
    """The report file (atomically) and the same as a markdown artifact; on a rewrite without new details
    the previous diagnosis details are kept."""
    path = Path(inc.report) if inc.report else report_path(incident_dir, inc)
    text = "\n\n".join(f"### {title}\n\n{body}" for title, body in details.items()) if details else details_of(path)
    markdown = render_report(inc, utcnow(), text)
    write_report(path, markdown)
    create_markdown_artifact(markdown, key=f"incident-{inc.check_id.replace('_', '-')}",  # keys: no '_'
                             description=f"incident {inc.id}")
    return str(path)
