"""The cleanup flow's ``prefect`` part: old flow runs of charhub-ops deployments, deleted through the Prefect API.

Prefect 3.9's server deletes flow runs only when its own environment says so (charhub_ops.cleanup.prefect_vacuum;
docs/prefect-retention.md), with one period for every run. This part needs nothing on the server and keeps failed
runs longer. Ours = deployments named in prefect.yaml **and** tagged ``charhub-ops``; nothing else is read.

Rounds of ``batch_size`` runs: read the oldest candidates (terminal, ended before the class's cutoff, not the current
run) → judge each (charhub_ops.cleanup.prefect_runs, ``now`` passed in) → delete with ``POST /flow_runs/bulk_delete``
(≤ 50 ids a request, the server's limit) whose filter repeats the whole predicate, so a run re-run or retried since it
was read stays. The server cascades task runs and states and queues the run's logs for deletion; its artifacts are
left to the server's ``orphans`` vacuum. A dry run reads the same rounds and deletes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import yaml
from prefect import task
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    DeploymentFilterTags,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterEndTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort

from charhub_ops.cleanup.prefect_runs import (
    FAILED,
    OTHER,
    Predicate,
    RunInfo,
    RunPolicy,
    counts,
    delete_predicates,
    judge_all,
)
from charhub_ops.errors import OpsError
from tasks.common import RETRY

__all__ = ["TAG", "BULK_LIMIT", "our_deployments", "prefect_runs"]

TAG = "charhub-ops"
SPEC_FILE = Path(__file__).resolve().parent.parent / "prefect.yaml"  # deployments.serve reads the same file
BULK_LIMIT = 50  # prefect/server/api/flow_runs.py BULK_OPERATION_LIMIT


@contextmanager
def _api(action: str) -> Iterator[None]:
    """Prefect API errors as OpsError: network and 5xx transient, the rest permanent."""
    try:
        yield
    except httpx.TransportError as exc:
        raise OpsError(f"prefect api: {action}: {exc}", transient=True) from exc
    except httpx.HTTPStatusError as exc:
        code = exc.response.status_code
        raise OpsError(f"prefect api: {action}: HTTP {code}", transient=code >= 500 or code == 429) from exc


def our_deployments(client, names: list[str] | None = None) -> dict[str, str]:
    """Deployment id → name of the deployments named in prefect.yaml (or ``names``) and tagged ``charhub-ops``."""
    names = names or [d["name"] for d in yaml.safe_load(SPEC_FILE.read_text())["deployments"]]
    only = DeploymentFilter(name=DeploymentFilterName(any_=names), tags=DeploymentFilterTags(all_=[TAG]))
    return {str(d.id): d.name for d in client.read_deployments(deployment_filter=only)}


def _filter(ids: list[str] | None, deployment_ids: list[str], types: tuple[str, ...] | list[str],
            ended_before: datetime, exclude: str | None = None) -> FlowRunFilter:
    return FlowRunFilter(
        id=FlowRunFilterId(any_=ids, not_any_=[exclude] if exclude else None),
        deployment_id=FlowRunFilterDeploymentId(any_=deployment_ids),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(t) for t in types])),
        end_time=FlowRunFilterEndTime(before_=ended_before))


def _read(client, deployments: dict[str, str], types: tuple[str, ...], policy: RunPolicy, now: datetime,
          offset: int, current: str | None) -> list[RunInfo]:
    flt = _filter(None, list(deployments), types, policy.cutoff(types[0], now), current)
    runs = client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.ID_DESC, limit=policy.batch_size,
                                 offset=offset)
    return [RunInfo(id=str(r.id), deployment_id=str(r.deployment_id), deployment=deployments[str(r.deployment_id)],
                    state_type=r.state_type.value if r.state_type else None, state_name=r.state_name,
                    end_time=r.end_time) for r in runs]


def _delete(client, predicate: Predicate) -> set[str]:
    """One bulk delete; the ids the server deleted (those still matching the predicate)."""
    flt = _filter(predicate.ids, predicate.deployment_ids, predicate.state_types, predicate.ended_before)
    response = client.request("POST", "/flow_runs/bulk_delete",  # type: ignore[arg-type]
                              json={"flow_runs": flt.model_dump(mode="json", exclude_none=True),
                                    "limit": len(predicate.ids)})
    response.raise_for_status()
    return {str(i) for i in response.json()["deleted"]}


def _rounds(client, deployments: dict[str, str], policy: RunPolicy, now: datetime, dry_run: bool,
            current: str | None) -> dict:
    expired: list[RunInfo] = []
    deleted: list[RunInfo] = []
    result = {"rounds": 0, "batches": 0, "skipped": 0}
    for types in (OTHER, FAILED):
        offset = 0
        while page := _read(client, deployments, types, policy, now, offset, current):
            result["rounds"] += 1
            gone, _kept = judge_all(page, policy, now, current)
            expired += gone
            done = set() if dry_run else _delete_all(client, gone, policy, now, result)
            deleted += [r for r in gone if r.id in done]
            offset += len(page) - len(done)
    result["skipped"] = 0 if dry_run else len(expired) - len(deleted)
    return {**result, "expired": counts(expired), "deleted": counts(deleted), "deleted_total": len(deleted)}


def _delete_all(client, runs: list[RunInfo], policy: RunPolicy, now: datetime, result: dict) -> set[str]:
    done: set[str] = set()
    for predicate in delete_predicates(runs, policy, now, BULK_LIMIT):
        done |= _delete(client, predicate)
        result["batches"] += 1
    return done


@task(name="prefect-runs", cache_policy=NONE, **RETRY)
def prefect_runs(policy: RunPolicy, now: datetime, dry_run: bool, current: str | None) -> dict:
    """Count (``dry_run``) or delete the expired flow runs of our deployments; counts per deployment and state.
    Retried on transient API errors: a repeated round finds only what is still there."""
    with get_client(sync_client=True) as client, _api("flow runs"):
        deployments = our_deployments(client)
        out = _rounds(client, deployments, policy, now, dry_run, current) if deployments else \
            {"rounds": 0, "batches": 0, "skipped": 0, "expired": [], "deleted": [], "deleted_total": 0}
    return {"dry_run": dry_run, "older_than_days": policy.older_than.total_seconds() / 86400,
            "failed_older_than_days": policy.failed_older_than.total_seconds() / 86400,
            "batch_size": policy.batch_size, "deployments": sorted(set(deployments.values())), **out}
