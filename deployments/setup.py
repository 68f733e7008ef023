"""One-command bootstrap and status against the server in ``PREFECT_API_URL`` (``charhub-ops setup|status``).

:func:`setup` is idempotent: it creates the work pool of prefect.yaml when missing, the blocks named in settings
and prefect.yaml that are missing (deployments/blocks.py: Secret blocks from values in the environment, the
notification block from its webhook URL; an existing block is never overwritten), applies the automations
(deployments/automations.py) to the notification block of setting ``notify_block``, and registers every
deployment of prefect.yaml for that pool. A block that needs a secret nobody gave is a warning naming the
variable or the one-liner that creates it, never a failure, and no secret is ever taken from a command line.
:func:`status` lists the last run of each deployment. :func:`server_retention` reads what the server's own
``db_vacuum`` deletes (``GET /api/admin/settings``; it can only be set in the server's environment, see
docs/prefect-retention.md): setup reports it, and both warn when the server never deletes flow runs.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound

from charhub_ops.cleanup.prefect_vacuum import ServerRetention, read_retention, retention_warning
from deployments.automations import apply_automations
from deployments.blocks import BlockSpec, block_exists, ensure_blocks
from deployments.serve import ROOT, load_deployments, load_spec

__all__ = ["setup", "status", "secret_blocks", "server_retention"]


def setup(notify_block: str | None, blocks: list[BlockSpec]) -> dict[str, Any]:
    """Bootstrap the server; returns {work_pool, blocks, automations, deployments, warnings}.
    ``blocks``: :func:`deployments.blocks.wanted_blocks` (values from the environment only)."""
    spec = load_spec()
    pool = _ensure_work_pool(spec)
    created, warnings = ensure_blocks(blocks)
    automations: dict[str, str] = {}
    if not notify_block:
        warnings.append("no automations: set CHARHUB_OPS_NOTIFY_BLOCK to a notification block (e.g. "
                        "slack-webhook/ops-alerts; with CHARHUB_OPS_NOTIFY_URL setup creates it) and run setup again")
    elif created.get(notify_block, "exists" if block_exists(notify_block) else "missing") == "missing":
        warnings.append(f"no automations: notification block {notify_block!r} (CHARHUB_OPS_NOTIFY_BLOCK) does not "
                        "exist yet")
    else:
        automations = apply_automations(notify_block)
    os.environ.setdefault("CHARHUB_OPS_HOME", str(ROOT))  # the pull step's working directory
    registered = {d.name: str(d.apply()) for d in load_deployments(work_pool=True)}
    retention = server_retention()
    warnings += [w for w in [retention_warning(retention)] if w]
    return {"work_pool": pool, "blocks": created, "automations": automations, "deployments": registered,
            "retention": retention.model_dump(mode="json"), "warnings": warnings}


def server_retention() -> ServerRetention:
    """What the server's db_vacuum deletes, from its settings; ``known`` False (with the reason) when the server
    does not say (an older server, Prefect Cloud, a proxy refusing /admin)."""
    with get_client(sync_client=True) as client:
        try:
            response = client.request("GET", "/admin/settings")
            response.raise_for_status()
            return read_retention(response.json())
        except httpx.HTTPStatusError as exc:
            return read_retention(None, f"GET /admin/settings: HTTP {exc.response.status_code}")


def secret_blocks(spec: dict[str, Any]) -> dict[str, list[str]]:
    """Secret block names given to ``*_secret`` parameters in prefect.yaml → the deployments using them."""
    out: dict[str, list[str]] = {}
    for dep in spec["deployments"]:
        params = [dep.get("parameters") or {}] + [t.get("parameters") or {} for t in dep.get("triggers") or []]
        for value in sorted({v for p in params for v in _secret_values(p)}):
            out.setdefault(value, []).append(dep["name"])
    return out


def _secret_values(params: dict[str, Any]):
    """Values of ``*_secret`` keys, also inside groups (``access: {database_url_secret: …}``); no templates."""
    for key, value in params.items():
        if isinstance(value, dict):
            yield from _secret_values(value)
        elif key.endswith("_secret") and isinstance(value, str) and "{{" not in value:
            yield value


def _ensure_work_pool(spec: dict[str, Any]) -> str:
    name = next(d["work_pool"]["name"] for d in spec["deployments"] if d.get("work_pool"))
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    return name


def status() -> list[dict[str, Any]]:
    """The last run of each deployment of prefect.yaml registered on the server: deployment, last_state,
    last_start, duration_s, next_run (ISO 8601 UTC or None)."""
    names = [d["name"] for d in load_spec()["deployments"]]
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments() if d.name in names}
        return [_row(client, name, deployments.get(name)) for name in names]


def _row(client, name: str, deployment) -> dict[str, Any]:
    row = {"deployment": name, "last_state": None, "last_start": None, "duration_s": None, "next_run": None}
    if deployment is None:
        return {**row, "last_state": "NOT REGISTERED"}
    only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
    started = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED])))
    last = client.read_flow_runs(deployment_filter=only, flow_run_filter=started, sort=FlowRunSort.START_TIME_DESC,
                                 limit=1)
    scheduled = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))
    upcoming = client.read_flow_runs(deployment_filter=only, flow_run_filter=scheduled,
                                     sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1)
    if last:
        run = last[0]
        row.update(last_state=run.state_name, last_start=_iso(run.start_time),
                   duration_s=round(run.total_run_time.total_seconds(), 1))
    if upcoming:
        row["next_run"] = _iso(upcoming[0].expected_start_time)
    return row


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None
