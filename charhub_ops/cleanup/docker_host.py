"""Docker host cleanup: dangling images, old stopped containers, build cache — never volumes.

CharHub's worst disk incident was dangling images and build cache (76 %); its worst data loss came from
volumes. So: volumes are never listed, never removed (containers are removed with ``v=False``: even their
anonymous volumes stay); an image that any container uses (running or stopped) is never a candidate; a
container carrying the keep label (``charhub.keep``, any value but false/0/no) is never removed, nor is a
stopped service of a docker compose project (CharHub's stack: ``compose up`` expects to find it) — except
a container a rollback parked (``<name>-replaced-<UTC time>``: it keeps the compose labels of the release
it ran, but compose no longer knows it), removed like any other once stopped longer than ``min_age``. An
image in ``protected`` (the last-good image of a deployed service, from the deploy records) is never a
candidate, pinned or not.
Disk usage before and after comes from the engine (``GET /system/df``).

:func:`plan_docker` is pure (the engine's listings in, a :class:`DockerPlan` out); :func:`scan_docker`
and :func:`execute_docker` talk to the engine. ``scope_label`` (``key=value``) limits candidates to
resources carrying that label (tests on a shared engine; a host with several projects).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import docker
from pydantic import BaseModel

from charhub_ops.docker_exec import docker_errors
from charhub_ops.errors import DockerError

__all__ = ["Container", "Image", "DockerInventory", "DockerPlan", "DockerResult", "DiskUsage", "scan_docker",
           "plan_docker", "execute_docker", "disk_usage", "KEEP_LABEL", "COMPOSE_LABEL"]

KEEP_LABEL = "charhub.keep"
COMPOSE_LABEL = "com.docker.compose.project"  # a stopped compose service is the stack's to manage, not ours
_STOPPED = ("exited", "created", "dead")
_FALSE = ("0", "false", "no")  # a keep label with any other value (even empty) keeps
_PARKED = re.compile(r"-replaced-\d{8}t\d{6}z$")  # charhub_ops.deploy.recreate's name for a parked container


class DiskUsage(BaseModel):
    images: int = 0
    containers: int = 0
    volumes: int = 0  # reported, never touched
    build_cache: int = 0

    @property
    def total(self) -> int:
        return self.images + self.containers + self.volumes + self.build_cache


class Container(BaseModel):
    id: str
    name: str
    state: str
    image_id: str
    finished: datetime | None
    labels: dict[str, str] = {}


class Image(BaseModel):
    id: str
    size: int
    labels: dict[str, str] = {}


class DockerInventory(BaseModel):
    containers: list[Container]
    dangling: list[Image]
    usage: DiskUsage


class DockerPlan(BaseModel):
    containers: list[Container]
    images: list[Image]
    kept: list[str]  # why a candidate stays ("image sha256:… used by container x")
    build_cache: bool
    usage_before: DiskUsage


class DockerResult(BaseModel):
    removed_containers: list[str] = []
    removed_images: list[str] = []
    build_cache_freed: int = 0
    warnings: list[str] = []
    usage_after: DiskUsage | None = None

    def freed(self, before: DiskUsage) -> int:
        return max(0, before.total - self.usage_after.total) if self.usage_after else 0


def _client(client: docker.DockerClient | None) -> docker.DockerClient:
    with docker_errors("connect"):
        return client or docker.from_env(timeout=60)


def disk_usage(client: docker.DockerClient) -> DiskUsage:
    with docker_errors("read disk usage"):
        df = client.df()
    return DiskUsage(images=int(df.get("LayersSize") or 0),
                     containers=sum(int(c.get("SizeRw") or 0) for c in df.get("Containers") or []),
                     volumes=sum(int((v.get("UsageData") or {}).get("Size") or 0) for v in df.get("Volumes") or []
                                 if int((v.get("UsageData") or {}).get("Size") or 0) > 0),
                     build_cache=sum(int(b.get("Size") or 0) for b in df.get("BuildCache") or []))


def _parse_time(text: str | None) -> datetime | None:
    if not text or text.startswith("0001-"):
        return None
    text = re.sub(r"(\.\d{1,6})\d*", r"\1", text)  # the engine gives nanoseconds
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _container(api, summary: dict) -> Container:
    state = summary.get("State", "")
    finished = None
    if state in _STOPPED:
        info = api.inspect_container(summary["Id"])
        finished = _parse_time(info["State"].get("FinishedAt")) or _parse_time(info.get("Created"))
    return Container(id=summary["Id"], name=(summary.get("Names") or ["?"])[0].lstrip("/"), state=state,
                     image_id=summary.get("ImageID", ""), finished=finished, labels=summary.get("Labels") or {})


def scan_docker(client: docker.DockerClient | None = None) -> DockerInventory:
    """Every container (running or not), the dangling images and the disk usage. Lists no volume."""
    client = _client(client)
    with docker_errors("list containers and images"):
        containers = [_container(client.api, c) for c in client.api.containers(all=True)]
        dangling = [Image(id=i["Id"], size=int(i.get("Size") or 0), labels=i.get("Labels") or {})
                    for i in client.api.images(filters={"dangling": True})]
    return DockerInventory(containers=containers, dangling=dangling, usage=disk_usage(client))


def _in_scope(labels: dict[str, str], scope_label: str | None) -> bool:
    if not scope_label:
        return True
    key, _, value = scope_label.partition("=")
    return labels.get(key) == value


def _keeps_container(c: Container, now: datetime, min_age: timedelta, keep_label: str) -> str | None:
    """Why the stopped container ``c`` stays (None: it goes)."""
    if keep_label in c.labels and c.labels[keep_label].lower() not in _FALSE:
        return f"label {keep_label}"
    if COMPOSE_LABEL in c.labels and not _PARKED.search(c.name):
        return f"service of compose project {c.labels[COMPOSE_LABEL]}"
    if c.finished is None or c.finished > now - min_age:
        return f"stopped less than {min_age} ago"
    return None


def plan_docker(inventory: DockerInventory, now: datetime, min_age: timedelta, *, build_cache: bool = True,
                scope_label: str | None = None, keep_label: str = KEEP_LABEL,
                protected: dict[str, str] | None = None) -> DockerPlan:
    """Pure: stopped containers finished before ``now - min_age`` without the keep label; dangling images
    no container uses and ``protected`` (image id → why) does not name. Build cache is engine-wide."""
    kept: list[str] = []
    containers = []
    for c in inventory.containers:
        if c.state not in _STOPPED or not _in_scope(c.labels, scope_label):
            continue
        if why := _keeps_container(c, now, min_age, keep_label):
            kept.append(f"container {c.name}: {why}")
        else:
            containers.append(c)
    used = {c.image_id: f"used by container {c.name}" for c in inventory.containers}
    keep = {**(protected or {}), **used}
    images = []
    for image in inventory.dangling:
        if not _in_scope(image.labels, scope_label):
            continue
        if image.id in keep:
            kept.append(f"image {image.id[:19]}: {keep[image.id]}")
        else:
            images.append(image)
    return DockerPlan(containers=containers, images=images, kept=kept, build_cache=build_cache,
                      usage_before=inventory.usage)


def execute_docker(plan: DockerPlan, client: docker.DockerClient | None = None) -> DockerResult:
    """Remove the planned containers (``v=False``: volumes stay) and images, prune the build cache.
    An engine refusal (the image got a container meanwhile...) is a warning; an unreachable engine raises."""
    client = _client(client)
    result = DockerResult()
    for c in plan.containers:
        with _refusal(result, f"container {c.name}"):
            client.api.remove_container(c.id, v=False, force=False)
            result.removed_containers.append(c.name)
    for image in plan.images:
        with _refusal(result, f"image {image.id[:19]}"):
            client.api.remove_image(image.id, force=False, noprune=False)
            result.removed_images.append(image.id)
    if plan.build_cache:
        with _refusal(result, "build cache"):
            result.build_cache_freed = int(client.api.prune_builds().get("SpaceReclaimed") or 0)
    result.usage_after = disk_usage(client)
    return result


@contextmanager
def _refusal(result: DockerResult, what: str) -> Iterator[None]:
    try:
        with docker_errors(f"remove {what}"):
            yield
    except DockerError as exc:
        if "cannot reach" in str(exc) or "did not answer" in str(exc):
            raise
        result.warnings.append(f"{what}: not removed: {exc}")
