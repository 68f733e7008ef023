"""Thin Prefect tasks of the monitor flow: the state store on the Prefect server, the probe and its context.

State lives in Prefect Variables (charhub_ops.monitoring.variables.VariableStore, reached through Prefect's
own client) when a server is configured: monitor runs land on different workers, and the server is the one
place they all see. Setting ``monitor_state`` chooses, by the one rule of
``charhub_ops.monitoring.store.open_state`` (``auto`` without a server: the repository for the monitor
pass's own streaks, one error line for windows and incidents).
"""

from __future__ import annotations

import contextvars
from datetime import UTC, datetime
from functools import partial

from prefect import task
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey
from prefect.context import FlowRunContext, TaskRunContext
from prefect.events import emit_event
from prefect.exceptions import PrefectHTTPStatusError
from prefect.logging import get_logger
from prefect.settings import PREFECT_API_URL

from charhub_ops.monitoring import store
from charhub_ops.monitoring.checks import CheckContext, CheckResult, run_check
from charhub_ops.monitoring.config import MonitorConfig
from charhub_ops.monitoring.loop import Sinks
from charhub_ops.monitoring.runner import context_for
from charhub_ops.monitoring.state import CheckState
from charhub_ops.monitoring.store import MonitorState
from charhub_ops.settings import Settings
from tasks.notify import notify

__all__ = ["ARTIFACT_KEY", "LatestArtifact", "emit", "open_state", "prefect_server", "check_context", "probe",
           "prefect_sinks", "utcnow"]

ARTIFACT_KEY = "charhub-ops-monitor"


def utcnow() -> datetime:
    return datetime.now(UTC)


def prefect_server() -> bool:
    """A Prefect server is configured, by Prefect's own setting (loaded here)."""
    return bool(PREFECT_API_URL.value())


def open_state(settings: Settings, spec: str | None = None, shared: bool = True) -> MonitorState:
    """The store named by ``spec`` (default: setting monitor_state), by charhub_ops.monitoring.store.open_state,
    with Prefect's client for the Variables (``shared``: windows and incidents the workers must see)."""
    return store.open_state(settings, spec, prefect_server(), partial(get_client, sync_client=True), shared)


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


def emit(event: str, resource_id: str, payload: dict) -> None:
    """One Prefect event (queued by Prefect's events worker: never blocks a probe), without the related
    resources Prefect attaches inside a flow run (the run, its flow, deployment, work pool, tags): each is an
    ``event_resources`` row, and the long-running monitor's run is not what the event is about."""
    contextvars.copy_context().run(_emit_unrelated, event, resource_id, payload)


def _emit_unrelated(event: str, resource_id: str, payload: dict) -> None:
    FlowRunContext.__var__.set(None)  # in this copy of the context only
    TaskRunContext.__var__.set(None)
    emit_event(event=event, resource={"prefect.resource.id": resource_id}, payload=payload)


class LatestArtifact:
    """The markdown artifact ``charhub-ops-monitor``: created once, then updated in place. A keyed artifact
    created again is a new row (a new version of the key), so the monitor PATCHes the one it found or made:
    the server updates the artifact and its key's "latest" together. Not through the client's
    ``update_artifact``, which also emits a ``prefect.artifact.updated`` event carrying the whole table.
    It belongs to no flow run, so deleting old runs never deletes it. A failure is logged, never raised
    (the probes matter more than their display)."""

    def __init__(self, key: str = ARTIFACT_KEY) -> None:
        self.key, self.artifact_id = key, None

    def publish(self, markdown: str) -> None:
        try:
            with get_client(sync_client=True) as client:
                self.artifact_id = self.artifact_id or self._find(client)
                if self.artifact_id is not None:
                    try:
                        client.request("PATCH", "/artifacts/{id}", json={"data": markdown},
                                       path_params={"id": self.artifact_id})
                        return
                    except PrefectHTTPStatusError as exc:
                        if exc.response.status_code != 404:
                            raise  # else deleted meanwhile: make it again
                made = client.create_artifact(ArtifactCreate(key=self.key, type="markdown", data=markdown,
                                                             description="charhub-ops monitor: latest probes"))
                self.artifact_id = made.id
        except Exception as exc:  # noqa: BLE001 - see the docstring
            get_logger("charhub_ops.monitor").warning("artifact %s not updated: %s", self.key, type(exc).__name__)

    def _find(self, client):
        only = ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[self.key]))
        found = client.read_latest_artifacts(artifact_filter=only, limit=1)
        return found[0].latest_id if found else None


def prefect_sinks(cfg: MonitorConfig, settings: Settings) -> Sinks:
    """The long-running monitor's outside: Prefect events, the latest-pass artifact, reminders through the
    notification block, probe contexts with Bearer tokens read once per monitor from their Secret blocks."""
    bearers: dict[str, str | None] = {}

    def context(check, state: CheckState, now: datetime) -> CheckContext:
        if check.id not in bearers:
            bearers[check.id] = _bearer(check)
        return context_for(check, settings, state, now, bearers[check.id])

    def remind(check, result: CheckResult, ctx: CheckContext) -> None:
        notify(cfg.notify_block, f"charhub-ops: {check.id} still down", f"{check.id}: {result.detail}", ctx.secrets)

    return Sinks(emit=emit, context=context, publish=LatestArtifact().publish, remind=remind)
