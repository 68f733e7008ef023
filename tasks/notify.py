"""Tasks and hooks that tell the outside world: Prefect events, notification blocks, concurrency limits."""

from __future__ import annotations

from prefect import task
from prefect.blocks.core import Block
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.logging import get_logger

from charhub_ops.settings import Settings
from tasks.common import run_settings

__all__ = ["FAILED_RUNS_AUTOMATION", "emit", "emit_many", "ensure_concurrency_limit", "notify", "notify_failure",
           "scrub"]

# The automation (deployments/automations.py) that notifies on a failed or crashed run of a deployment.
FAILED_RUNS_AUTOMATION = "charhub-ops: flow run failed or crashed"


@task(name="emit-event", cache_policy=NONE)
def emit(event: str, resource_id: str, payload: dict) -> None:
    """Emit a Prefect event (e.g. ``charhub.backup.completed`` on ``charhub.database.<name>``)."""
    emit_event(event=event, resource={"prefect.resource.id": resource_id}, payload=payload)


@task(name="emit-events", cache_policy=NONE)
def emit_many(events: list[tuple[str, str, dict]]) -> None:
    """Emit several Prefect events (event, resource id, payload) in one task."""
    for event, resource_id, payload in events:
        emit_event(event=event, resource={"prefect.resource.id": resource_id}, payload=payload)


@task(name="ensure-concurrency-limit", cache_policy=NONE)
def ensure_concurrency_limit(name: str, limit: int) -> None:
    """Create or resize a global concurrency limit (limits that don't exist are otherwise skipped)."""
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit)


def scrub(text: str, settings: Settings | None = None) -> str:
    """Remove every secret value the settings know of from ``text``."""
    settings = settings or _settings_or_none()
    for secret in settings.secret_values() if settings else []:
        text = text.replace(secret, "**********")
    return text


def _settings_or_none() -> Settings | None:
    """The run's settings (read once per flow run, tasks.common.run_settings); None when they are invalid."""
    try:
        return run_settings()
    except Exception:  # noqa: BLE001 - a failure report must never fail on settings
        return None


def notify_failure(flow, flow_run, state) -> None:
    """Flow on_failure hook: send a secret-free message through the notification block in settings — unless
    the run is a deployment's that the failed-runs automation watches (it says it already: once is enough)."""
    settings = _settings_or_none()
    if settings is None or not settings.runs.notify_block or _automation_notifies(flow_run):
        return
    subject = f"charhub-ops: {flow.name} run {flow_run.name} failed"
    body = scrub(f"{subject}\nstate: {state.name}\n{state.message or ''}", settings)
    try:
        Block.load(settings.runs.notify_block).notify(body=body, subject=subject)
    except Exception as exc:  # noqa: BLE001 - the failure being reported matters more
        get_logger("charhub_ops.notify").error("notification block %r failed: %s", settings.runs.notify_block,
                                               type(exc).__name__)


def _automation_notifies(flow_run) -> bool:
    """Whether an enabled :data:`FAILED_RUNS_AUTOMATION` watches this run's deployment. When in doubt (an ad hoc
    run, no automation, the API unreachable) False: a message twice is better than none."""
    if not getattr(flow_run, "deployment_id", None):
        return False
    try:
        with get_client(sync_client=True) as client:
            watching = [a for a in client.read_automations_by_name(FAILED_RUNS_AUTOMATION) if a.enabled]
            if not watching:
                return False
            name = client.read_deployment(flow_run.deployment_id).name
    except Exception:  # noqa: BLE001 - a failure report must never fail on this check
        return False
    related = watching[0].trigger.match_related
    names = related.get("prefect.resource.name") if related is not None and hasattr(related, "get") else None
    return name in (names if isinstance(names, list) else [names])


@task(name="notify", cache_policy=NONE)
def notify(block: str | None, subject: str, body: str, secrets: list[str] | None = None) -> bool:
    """Send a secret-free message through the notification block ``block`` (default: setting notify_block).
    Returns False when no block is configured or it failed (a notification never fails a runbook)."""
    settings = _settings_or_none()
    block = block or (settings.runs.notify_block if settings else None)
    if not block:
        return False
    for secret in secrets or []:
        body = body.replace(secret, "**********")
    try:
        Block.load(block).notify(body=scrub(body, settings), subject=scrub(subject, settings))
    except Exception as exc:  # noqa: BLE001 - the incident matters more than its notification
        get_logger("charhub_ops.notify").error("notification block %r failed: %s", block, type(exc).__name__)
        return False
    return True
