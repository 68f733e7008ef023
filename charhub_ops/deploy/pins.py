"""Pins: a tag per service on its last-good image, so that the image a rollback needs is never dangling.

``docker compose up --build`` gives the release's tag to the new image and leaves the old one — the
last-good — without a tag: a dangling image, which the Docker cleanup (Sundays, and on
``charhub.disk.high``) removes. :func:`pin` tags the last-good image ``charhub-ops/last-good-<service>:
<image id, 12 hex>`` whenever a release becomes last-good (``deploy pre``, a passed ``deploy post``), and
unpins that service's older last-good images (an untag: the engine deletes an image only when nothing else
names or uses it). The cleanup also keeps any image a last-good record names
(:func:`charhub_ops.deploy.releases.protected_images`), pin or not.
"""

from __future__ import annotations

import re

import docker

from charhub_ops.deploy.record import ServiceRecord
from charhub_ops.docker_exec import docker_errors

__all__ = ["PIN_PREFIX", "pin_repository", "pin"]

PIN_PREFIX = "charhub-ops/last-good-"


def pin_repository(service: str) -> str:
    """``charhub-ops/last-good-<service>`` with the service name made a valid repository name."""
    return PIN_PREFIX + (re.sub(r"[^a-z0-9]+", "-", service.lower()).strip("-") or "service")


def pin(client: docker.DockerClient, record: ServiceRecord) -> str:
    """Tag ``record``'s image as its service's last-good and untag the service's older pins; returns the pin."""
    repository, tag = pin_repository(record.service), record.image_id.split(":")[-1][:12]
    with docker_errors(f"pin {record.image_id[:19]} as {repository}:{tag}"):
        client.api.tag(record.image_id, repository, tag)
        stale = [t for image in client.api.images(name=repository) if image["Id"] != record.image_id
                 for t in image.get("RepoTags") or [] if t.startswith(repository + ":")]
        for name in stale:
            try:
                client.api.remove_image(name, force=False, noprune=False)
            except docker.errors.APIError:  # still used by a container: it stays, and so does its image
                pass
    return f"{repository}:{tag}"
