"""Container facts and the one container action, through the Docker engine's API (docker SDK).

Engine errors become DockerError (unreachable engine: transient); a missing container is a DockerError
naming it, permanent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker
import requests

from charhub_ops.errors import DockerError
from charhub_ops.monitoring.redact import env_values

__all__ = ["container_facts", "container_stats", "container_logs", "container_env_values", "restart_container",
           "disk_usage_summary"]


@contextmanager
def _container(name: str) -> Iterator:
    try:
        client = docker.from_env(timeout=30)
    except docker.errors.DockerException as exc:
        raise DockerError(f"docker: cannot reach the Docker engine: {exc}", transient=True) from exc
    try:
        yield client.containers.get(name) if name else client
    except docker.errors.NotFound as exc:
        raise DockerError(f"docker: container {name!r} not found") from exc
    except (docker.errors.APIError, requests.RequestException) as exc:
        raise DockerError(f"docker: {name}: {exc}", transient=True) from exc
    finally:
        client.close()


def container_facts(name: str) -> dict:
    with _container(name) as c:
        state = c.attrs["State"]
        return {"name": name, "status": state.get("Status"), "running": bool(state.get("Running")),
                "health": (state.get("Health") or {}).get("Status"), "restart_count": c.attrs.get("RestartCount", 0),
                "exit_code": state.get("ExitCode"), "started_at": state.get("StartedAt"),
                "finished_at": state.get("FinishedAt"), "oom_killed": state.get("OOMKilled"),
                "image": c.attrs.get("Config", {}).get("Image")}


def container_stats(name: str) -> dict:
    """CPU % (of the whole machine's CPUs, as ``docker stats`` shows it) and memory % of the limit."""
    with _container(name) as c:
        s = c.stats(stream=False)
    cpu, pre = s.get("cpu_stats", {}), s.get("precpu_stats", {})
    cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
    sys_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cpus = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or [1])
    mem = s.get("memory_stats", {})
    used = mem.get("usage", 0) - (mem.get("stats", {}).get("inactive_file", 0) or 0)
    limit = mem.get("limit") or 0
    return {"cpu_percent": round(cpu_delta / sys_delta * cpus * 100, 1) if sys_delta > 0 else 0.0,
            "memory_bytes": used, "memory_percent": round(used / limit * 100, 1) if limit else 0.0}


def container_logs(name: str, tail: int) -> str:
    with _container(name) as c:
        return c.logs(tail=tail, timestamps=False).decode(errors="replace")


def container_env_values(name: str) -> list[str]:
    """The values of the container's environment (what its logs are masked with wherever they are shown)."""
    with _container(name) as c:
        return env_values(c.attrs.get("Config", {}).get("Env") or [])


def restart_container(name: str, timeout: int = 10) -> None:
    with _container(name) as c:
        c.restart(timeout=timeout)


def disk_usage_summary() -> dict:
    """Docker's own disk usage (images, containers, volumes, build cache), in bytes."""
    with _container("") as client:
        df = client.df()
    return {"images": sum(i.get("Size", 0) for i in df.get("Images") or []),
            "containers": sum(c.get("SizeRw", 0) or 0 for c in df.get("Containers") or []),
            "volumes": sum((v.get("UsageData") or {}).get("Size", 0) for v in df.get("Volumes") or []),
            "build_cache": sum(b.get("Size", 0) for b in df.get("BuildCache") or [])}
