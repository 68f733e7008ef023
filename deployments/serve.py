"""Serve every deployment of ``prefect.yaml`` from this process (no work pool/worker needed).

    python -m deployments.serve

Schedules (cron, timezone, active, parameters, slug), triggers, parameters, tags, description and
concurrency limits come from prefect.yaml through the same Prefect functions ``prefect deploy`` uses,
so the two ways of running cannot drift apart (tests/test_deployments_serve.py compares them).
``work_pool`` is kept with ``work_pool=True`` (registration for a worker); :func:`main` serves every
deployment with no work pool. Each served run is a ``python -m prefect.engine`` child process that loads
its flow from what the server stores, so :func:`main` sets each deployment's pull step to this checkout
(``set_working_directory``): Prefect's update of a deployment registered before for a worker
(``charhub-ops setup``) clears its pull steps and leaves its path empty, and every run then crashed.
Note: ``serve`` pauses its deployments when the process stops. Its poll for due runs is Prefect's
``PREFECT_RUNNER_POLL_FREQUENCY`` (10 s).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import yaml
from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
from prefect.cli.deploy._storage import _PullStepStorage
from prefect.cli.deploy._triggers import _initialize_deployment_triggers
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate, DeploymentUpdate
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import TerminationSignal
from prefect.flows import load_flow_from_entrypoint
from prefect.runner import Runner
from prefect.utilities.templating import apply_values

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILE = ROOT / "prefect.yaml"
SERVE_PULL_STEP = {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}

__all__ = ["load_deployments", "load_spec", "main"]


def load_spec(path: Path = SPEC_FILE) -> dict[str, Any]:
    """prefect.yaml as a dict."""
    return yaml.safe_load(path.read_text())


def load_deployments(path: Path = SPEC_FILE, *, work_pool: bool = False) -> list[RunnerDeployment]:
    """``RunnerDeployment`` objects for every deployment in prefect.yaml; with ``work_pool`` they carry
    the pool, queue, job variables and the file's pull steps (registration for a worker)."""
    spec = load_spec(path)
    built = [_deployment(dep) for dep in spec["deployments"]]
    for runner, dep in zip(built, spec["deployments"], strict=True):
        _attach_work_pool(runner, dep.get("work_pool") if work_pool else {}, spec.get("pull") if work_pool else None)
    return built


def _deployment(dep: dict[str, Any]) -> RunnerDeployment:
    flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
    limit = dep.get("concurrency_limit")
    if isinstance(limit, dict):
        limit = ConcurrencyLimitConfig(**limit)
    schedules = [DeploymentScheduleCreate(**_schedule_config_to_deployment_schedule(s))
                 for s in dep.get("schedules") or []]
    triggers = _initialize_deployment_triggers(dep["name"], [dict(t) for t in dep.get("triggers") or []])
    return flow.to_deployment(
        name=dep["name"], description=dep.get("description"), tags=dep.get("tags"), version=dep.get("version"),
        parameters=dep.get("parameters") or {}, schedules=schedules, concurrency_limit=limit,
        triggers=triggers, paused=dep.get("paused"),
        enforce_parameter_schema=dep.get("enforce_parameter_schema", True),
    )


def _attach_work_pool(runner: RunnerDeployment, pool: dict[str, Any], pull: list[dict[str, Any]] | None) -> None:
    """Set even when empty (as ``serve`` does): an update then clears a pool registered before."""
    runner.work_pool_name = pool.get("name")
    runner.work_queue_name = pool.get("work_queue_name")
    runner.job_variables = pool.get("job_variables") or {}
    if pull is not None:
        runner.storage = _PullStepStorage(apply_values(pull, os.environ, remove_notset=False))  # as deploy does


async def _serve(deployments: list[RunnerDeployment]) -> None:
    """Register every deployment without a pool, give each the pull step of this checkout, poll for runs."""
    runner = Runner(pause_on_shutdown=True)
    async with get_client() as client:
        for deployment in deployments:
            deployment_id = await runner.aadd_deployment(deployment)
            await client.update_deployment(deployment_id, DeploymentUpdate(pull_steps=[SERVE_PULL_STEP]))
    print(f"serving {len(deployments)} deployments; Ctrl-C stops them (and pauses their schedules)", flush=True)
    await runner.start()


def main() -> None:
    try:
        asyncio.run(_serve(load_deployments()))
    except (KeyboardInterrupt, TerminationSignal):
        pass


if __name__ == "__main__":
    main()
