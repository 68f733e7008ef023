"""Put a service's container back to a recorded release, through the Docker engine's API.

:func:`image_refs` runs first, for every service of a rollback: a last-good image that no longer exists
stops the rollback before any container is touched. :func:`recreate` then, per service: stop the running
container and rename it aside (``<name>-replaced-<UTC time>``, kept stopped for inspection; the weekly
Docker cleanup removes stopped containers after a day) → create the container from the record under the
service's name → connect its other networks → start. Any failure removes the half-made container and puts
the old one back under its name, started again if it ran.

Volumes are never removed and never touched: the new container mounts the same named volumes, and the
anonymous ones of the recorded container by their names. No ``remove(v=True)`` anywhere.
"""

from __future__ import annotations

from datetime import datetime

import docker
from pydantic import BaseModel

from charhub_ops.deploy.record import ServiceRecord, create_body
from charhub_ops.docker_exec import docker_errors
from charhub_ops.errors import DockerError

__all__ = ["Recreated", "engine", "image_refs", "inspect_container", "recreate"]


class Recreated(BaseModel):
    service: str
    container_id: str
    from_image: str | None      # the image id the replaced container ran (None: there was none)
    to_image: str
    replaced: str | None        # the old container's new name (kept, stopped)


def engine() -> docker.DockerClient:
    """A client for the Docker engine (DOCKER_HOST or the local socket); DockerError when it is unreachable."""
    with docker_errors("connect"):
        client = docker.from_env(timeout=60)
        client.ping()
    return client


def inspect_container(client: docker.DockerClient, name: str, missing_ok: bool = False) -> dict | None:
    """``docker inspect NAME``; DockerError naming the service when it does not exist (None with ``missing_ok``)."""
    with docker_errors(f"inspect {name}"):
        try:
            return client.api.inspect_container(name)
        except docker.errors.NotFound as exc:
            if missing_ok:
                return None
            raise DockerError(f"docker: service container '{name}' not found") from exc


def _image_ref(client: docker.DockerClient, record: ServiceRecord) -> str:
    with docker_errors(f"inspect image {record.tag}"):
        try:
            client.api.inspect_image(record.image_id)
        except docker.errors.ImageNotFound as exc:
            raise DockerError(
                f"rollback {record.service}: the last-good image {record.image_id[:19]} ({record.tag}) no longer "
                f"exists on this engine; nothing was changed (load or build that image again, then retry)") from exc
        try:
            same = client.api.inspect_image(record.tag)["Id"] == record.image_id
        except docker.errors.ImageNotFound:
            same = False
    return record.tag if same else record.image_id


def image_refs(client: docker.DockerClient, records: list[ServiceRecord]) -> dict[str, str]:
    """Per service, how to name its recorded image: the tag while it still names that image, else the id.
    DockerError for the first image that is gone (checked for all before anything changes)."""
    return {r.service: _image_ref(client, r) for r in records}


def _existing(client: docker.DockerClient, name: str):
    with docker_errors(f"inspect {name}"):
        try:
            return client.containers.get(name)
        except docker.errors.NotFound:
            return None


def _park(old, name: str, now: datetime, stop_timeout: int) -> str:
    """Stop, rename aside, and restart policy ``no``: a daemon restart must not start it beside the new one."""
    parked = f"{name}-replaced-{now:%Y%m%dt%H%M%S}z"
    with docker_errors(f"stop {name}", name):
        old.stop(timeout=stop_timeout)
        old.rename(parked)
        old.update(restart_policy={"Name": "no"})
    return parked


def _create(client: docker.DockerClient, record: ServiceRecord, image: str):
    body, later = create_body(record, image)
    with docker_errors(f"create {record.service}"):
        created = client.api.create_container_from_config(body, name=record.service)
        for network, endpoint in later.items():
            client.api.connect_container_to_network(
                created["Id"], network, aliases=endpoint["Aliases"], links=endpoint["Links"],
                ipv4_address=(endpoint["IPAMConfig"] or {}).get("IPv4Address"),
                ipv6_address=(endpoint["IPAMConfig"] or {}).get("IPv6Address"))
        client.api.start(created["Id"])
    return created["Id"]


def _put_back(client: docker.DockerClient, name: str, old, parked: str | None, was_running: bool) -> None:
    """Undo: remove the half-made container (its volumes stay), give the old one its name back, start it."""
    with docker_errors(f"put {name} back", name):
        made = _existing(client, name)
        if made is not None and (old is None or made.id != old.id):
            made.remove(force=True)  # v=False: volumes are never removed
        if old is not None and parked:
            old.rename(name)
            old.update(restart_policy=old.attrs["HostConfig"].get("RestartPolicy") or {"Name": "no"})
        if old is not None and was_running:
            old.start()


def recreate(client: docker.DockerClient, record: ServiceRecord, image: str, now: datetime,
             stop_timeout: int = 10) -> Recreated:
    """Replace the container ``record.service`` by one created from ``record`` running ``image`` (from
    :func:`image_refs`). On failure the old container is back under its name and the error is raised."""
    old = _existing(client, record.service)
    was_running = bool(old and old.status == "running")
    from_image = old.attrs.get("Image") if old else None
    parked = None
    try:
        if old is not None:
            parked = _park(old, record.service, now, stop_timeout)
        container_id = _create(client, record, image)
    except BaseException:
        _put_back(client, record.service, old, parked, was_running)
        raise
    return Recreated(service=record.service, container_id=container_id, from_image=from_image,
                     to_image=record.image_id, replaced=parked)
