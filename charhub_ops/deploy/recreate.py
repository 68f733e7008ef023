"""Put a service's container back to a recorded release, through the Docker engine's API.

:func:`image_refs` runs first, for every service of a rollback: a last-good image that no longer exists
stops the rollback before any container is touched. :func:`recreate` then, per service: check that the
container under the service's name is still the one the caller saw (``expect_id``) → stop it, rename it
aside (``<name>-replaced-<UTC time>``, kept stopped for inspection; the Docker cleanup removes such a
container once it has been stopped longer than ``cleanup_container_age_hours``, compose labels or not) →
create the container from the record under the service's name → connect its other networks → start.

Every step is remembered as it happens (:class:`Recreated`: the parked container's id, the created
container's id), so a failure at any point — between the rename and the restart-policy update too — is
undone exactly: the container *this call* created is removed by its id, the container *this call* parked
gets its name, restart policy and state back. :func:`undo` does the same later for a recreate that
succeeded (a multi-service rollback whose next service failed). Nothing acts on a container by its name
alone: a container another run put under the name is never removed.

Volumes are never removed and never touched: the new container mounts the same named volumes, and the
anonymous ones of the recorded container by their names. No ``remove(v=True)`` anywhere.
"""

from __future__ import annotations

from datetime import datetime

import docker
from pydantic import BaseModel, Field

from charhub_ops.deploy.record import ServiceRecord, create_body
from charhub_ops.docker_exec import docker_errors
from charhub_ops.errors import DockerError

__all__ = ["Recreated", "engine", "image_refs", "inspect_container", "recreate", "undo"]


class Recreated(BaseModel):
    service: str
    container_id: str | None = Field(None, description="The container this recreate created")
    from_image: str | None = None  # the image id the replaced container ran (None: there was none)
    to_image: str
    replaced: str | None = None  # the old container's new name (kept, stopped)
    replaced_id: str | None = Field(None, description="The container this recreate parked (by id)")
    was_running: bool = False
    restart_policy: dict = Field(default_factory=dict, description="The parked container's own policy")


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


def _get(client: docker.DockerClient, ref: str):
    with docker_errors(f"inspect {ref}"):
        try:
            return client.containers.get(ref)
        except docker.errors.NotFound:
            return None


def _park(old, done: Recreated, now: datetime, stop_timeout: int) -> None:
    """Stop, rename aside, and restart policy ``no``: a daemon restart must not start it beside the new one.
    ``done`` learns the new name as soon as the rename succeeded."""
    parked = f"{done.service}-replaced-{now:%Y%m%dt%H%M%S}z"
    with docker_errors(f"stop {done.service}", done.service):
        old.stop(timeout=stop_timeout)
        old.rename(parked)
        done.replaced = parked
        old.update(restart_policy={"Name": "no"})


def _create(client: docker.DockerClient, record: ServiceRecord, image: str, done: Recreated) -> None:
    body, later = create_body(record, image)
    with docker_errors(f"create {record.service}"):
        done.container_id = client.api.create_container_from_config(body, name=record.service)["Id"]
        for network, endpoint in later.items():
            client.api.connect_container_to_network(
                done.container_id, network, aliases=endpoint["Aliases"], links=endpoint["Links"],
                ipv4_address=(endpoint["IPAMConfig"] or {}).get("IPv4Address"),
                ipv6_address=(endpoint["IPAMConfig"] or {}).get("IPv6Address"))
        client.api.start(done.container_id)


def undo(client: docker.DockerClient, done: Recreated) -> None:
    """Remove the container ``done`` created (by id; its volumes stay), give the one it parked (by id) its
    name, restart policy and state back. A container of another run under the name is left alone: then
    DockerError says where the parked one is."""
    with docker_errors(f"put {done.service} back", done.service):
        made = _get(client, done.container_id) if done.container_id else None
        if made is not None:
            made.remove(force=True)  # v=False: volumes are never removed
        old = _get(client, done.replaced_id) if done.replaced_id else None
        if old is None:
            return
        if done.replaced and old.name != done.service:
            holder = _get(client, done.service)
            if holder is not None:
                raise DockerError(f"rollback {done.service}: another container ({holder.short_id}) holds the name; "
                                  f"the replaced container stays parked as {old.name}")
            old.rename(done.service)
        old.update(restart_policy=done.restart_policy or {"Name": "no"})
        if done.was_running:
            old.start()


def recreate(client: docker.DockerClient, record: ServiceRecord, image: str, now: datetime,
             stop_timeout: int = 10, expect_id: str | None = None) -> Recreated:
    """Replace the container ``record.service`` by one created from ``record`` running ``image`` (from
    :func:`image_refs`). ``expect_id``: the container the caller found under the name (re-checked now;
    DockerError, nothing changed, when another one is there). On failure everything done is undone
    (:func:`undo`) and the error is raised."""
    old = _get(client, record.service)
    if expect_id is not None and (old is None or old.id != expect_id):
        raise DockerError(f"rollback {record.service}: the container changed since the plan ({expect_id[:12]} → "
                          f"{old.short_id if old else 'none'}); nothing was changed")
    done = Recreated(service=record.service, to_image=record.image_id)
    if old is not None:
        done = done.model_copy(update={"from_image": old.attrs.get("Image"), "replaced_id": old.id,
                                       "was_running": old.status == "running",
                                       "restart_policy": old.attrs["HostConfig"].get("RestartPolicy") or {}})
    try:
        if old is not None:
            _park(old, done, now, stop_timeout)
        _create(client, record, image, done)
    except BaseException:
        undo(client, done)
        raise
    return done
