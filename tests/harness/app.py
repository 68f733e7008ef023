"""A stand-in for CharHub's backend container: busybox httpd with a Docker health check on /health."""

from __future__ import annotations

import uuid

import pytest

from tests.harness.docker_pg import ensure_busybox_image, require_docker, stop

SCRIPT = "mkdir -p /tmp/www && echo ok > /tmp/www/health && exec httpd -f -p 8080 -h /tmp/www"


def start_app_container(client, name: str):
    image = ensure_busybox_image(client)
    stop(client, name)
    return client.containers.run(
        image, ["sh", "-c", SCRIPT], name=name, detach=True, init=True, labels={"charhub-ops-test": "app"},
        healthcheck={"test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"],
                     "interval": 300_000_000, "timeout": 2_000_000_000, "retries": 3, "start_period": 0})


@pytest.fixture
def app_container():
    client = require_docker()
    name = f"charhub-ops-test-app-{uuid.uuid4().hex[:8]}"
    start_app_container(client, name)
    yield name
    stop(client, name)
    client.close()
