"""Alerting without code: the Prefect automations of charhub-ops, kept here and applied idempotently.

Each automation sends the notification block (setting ``notify_block``, e.g. ``slack-webhook/ops-alerts``)
a message when:

- ``charhub.backup.verification-failed``, ``charhub.backup.size-anomaly`` or ``charhub.migration.failed``
  is emitted (resource ``charhub.*``);
- a flow run of a deployment of prefect.yaml ends Failed or Crashed (Crashed: the process died, so the
  flows' own on_failure hook never ran; for Failed the hook sees this automation and stays silent: one message);
- a deployment of prefect.yaml stops being scheduled: ``prefect.deployment.not-ready`` (no worker or
  ``serve`` process polls it any more, so its scheduled runs would sit Late) or ``prefect.deployment.disabled``;
- the monitor stopped: no ``charhub.monitor.heartbeat`` (resource ``charhub.monitor``, sent every 10 min by a
  long-running monitor) within ``HEARTBEAT_WITHIN`` (30 min). A proactive trigger with ``after`` and ``expect``
  both the heartbeat, for each resource (Prefect's own crash-detection shape; without ``for_each`` the
  server opens a new window after each firing and repeats the message every window): its window opens at
  each heartbeat, it fires once when a window passes without one, and stays silent until heartbeats come
  back — one message per outage of the monitor, none before the first heartbeat.

``apply_automations`` creates what is missing and replaces what differs, matched by name (all names start
with ``charhub-ops:``); applying twice changes nothing. Messages carry event names and resource names
only, never payloads (which could hold URLs).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from uuid import UUID

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from deployments.serve import load_spec
from tasks.notify import FAILED_RUNS_AUTOMATION

__all__ = ["ALERT_EVENTS", "HEARTBEAT_AUTOMATION", "HEARTBEAT_WITHIN", "apply_automations", "automations"]

PREFIX = "charhub-ops:"
ALERT_EVENTS = ("charhub.backup.verification-failed", "charhub.backup.size-anomaly", "charhub.migration.failed")
_BODY = "{{ event.event }} on {{ event.resource.name or event.resource.id }} at {{ event.occurred }}"
HEARTBEAT = "charhub.monitor.heartbeat"  # charhub_ops.monitoring.loop.HEARTBEAT_EVENT
HEARTBEAT_AUTOMATION = f"{PREFIX} monitor stopped"
HEARTBEAT_WITHIN = 1800.0  # three heartbeats (every 10 min): one lost on the way alerts nobody
_STOPPED = (HEARTBEAT_AUTOMATION + ": no " + HEARTBEAT + " for %s (the last at {{ event.occurred }}): nothing is "
            "probing the checks — look at the monitor deployment's runs or the monitor service")


def automations(block_document_id: UUID, deployment_names: Iterable[str] | None = None,
                heartbeat_within: float = HEARTBEAT_WITHIN) -> list[AutomationCore]:
    """The automations, sending through the notification block ``block_document_id`` (``heartbeat_within``:
    seconds without a monitor heartbeat before "monitor stopped", at least 10)."""
    names = sorted(deployment_names or (d["name"] for d in load_spec()["deployments"]))
    triggers = {
        f"{PREFIX} {event}": EventTrigger(expect={event}, match={"prefect.resource.id": "charhub.*"})
        for event in ALERT_EVENTS
    }
    triggers[FAILED_RUNS_AUTOMATION] = EventTrigger(
        expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        match_related={"prefect.resource.role": "deployment", "prefect.resource.name": names})
    triggers[f"{PREFIX} deployment no longer scheduled"] = EventTrigger(
        expect={"prefect.deployment.not-ready", "prefect.deployment.disabled"},
        match={"prefect.resource.id": "prefect.deployment.*", "prefect.resource.name": names})
    for trigger in triggers.values():
        trigger.posture, trigger.threshold = Posture.Reactive, 1
    out = [_automation(name, trigger, block_document_id) for name, trigger in triggers.items()]
    stopped = EventTrigger(after={HEARTBEAT}, expect={HEARTBEAT}, match={"prefect.resource.id": "charhub.monitor"},
                           for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                           within=timedelta(seconds=heartbeat_within))
    w = heartbeat_within
    body = _STOPPED % (f"{w:g} s" if w < 60 else f"{w / 60:g} min")
    return [*out, _automation(HEARTBEAT_AUTOMATION, stopped, block_document_id, body)]


def _automation(name: str, trigger: EventTrigger, block_document_id: UUID, body: str | None = None) -> AutomationCore:
    action = SendNotification(block_document_id=block_document_id, subject=name, body=body or f"{name}: {_BODY}")
    return AutomationCore(name=name, description=f"{name} → notification block", enabled=True, trigger=trigger,
                      actions=[action])


def apply_automations(notify_block: str, deployment_names: Iterable[str] | None = None,
                      heartbeat_within: float = HEARTBEAT_WITHIN) -> dict[str, str]:
    """Create or update every automation for the block ``notify_block`` ("<type>/<name>"); returns
    {name: "created" | "updated" | "unchanged"}."""
    block_id = Block.load(notify_block)._block_document_id
    out = {}
    with get_client(sync_client=True) as client:
        for wanted in automations(block_id, deployment_names, heartbeat_within):
            existing = client.read_automations_by_name(wanted.name)
            for extra in existing[1:]:
                client.delete_automation(extra.id)
            if not existing:
                client.create_automation(wanted)
                out[wanted.name] = "created"
            elif _same(existing[0], wanted):
                out[wanted.name] = "unchanged"
            else:
                client.update_automation(existing[0].id, wanted)
                out[wanted.name] = "updated"
    return out


def _same(current: AutomationCore, wanted: AutomationCore) -> bool:
    def dump(automation: AutomationCore) -> dict:
        return _sorted(automation.model_dump(mode="json", include={"name", "description", "enabled", "trigger",
                                                                   "actions"}, exclude={"trigger": {"id"}}))
    return dump(current) == dump(wanted)


def _sorted(value):
    """Sets (``expect``, names) dump as lists in iteration order, which differs between a set built here and one
    read back from the server: compare them sorted."""
    if isinstance(value, dict):
        return {key: _sorted(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [_sorted(item) for item in value]
        return sorted(items) if all(isinstance(item, str) for item in items) else items
    return value
