"""Serve every deployment of ``prefect.yaml`` from this process (no work pool/worker needed).

    python -m deployments.serve

Schedules, parameters, tags and concurrency limits come from prefect.yaml, so the two ways of
running cannot drift apart. Note: ``serve`` pauses its deployments when the process stops.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["load_deployments", "main"]


def load_deployments(path: Path = ROOT / "prefect.yaml") -> list:
    """``RunnerDeployment`` objects for every deployment in prefect.yaml."""
    spec = yaml.safe_load(path.read_text())
    out = []
    for dep in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
        limit = dep.get("concurrency_limit")
        if isinstance(limit, dict):
            limit = ConcurrencyLimitConfig(limit=limit["limit"],
                                           collision_strategy=ConcurrencyLimitStrategy(limit["collision_strategy"]))
        crons = [s["cron"] for s in dep.get("schedules", []) if "cron" in s]
        out.append(flow.to_deployment(
            name=dep["name"], description=dep.get("description"), tags=dep.get("tags"),
            parameters=dep.get("parameters") or {}, cron=crons or None, concurrency_limit=limit,
            triggers=dep.get("triggers"),
        ))
    return out


def main() -> None:
    serve(*load_deployments())


if __name__ == "__main__":
    main()
