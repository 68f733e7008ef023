"""Helpers for the monitoring drills: a backend container on a fixed host port, a config writer, a small tmpfs
(notifications: tests/harness/webhook.py)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.harness.app import SCRIPT
from tests.harness.docker_pg import docker_client, ensure_busybox_image, stop
from tests.harness.services import free_port

__all__ = ["Backend", "backend_fixture", "write_config", "small_tmpfs_fixture"]


class Backend:
    """busybox httpd with a /health file, published on a fixed 127.0.0.1 port (stable across restarts)."""

    def __init__(self, client, name: str, port: int) -> None:
        self.client, self.name, self.port = client, name, port
        self.url = f"http://127.0.0.1:{port}/health"

    @property
    def container(self):
        return self.client.containers.get(self.name)

    def sh(self, command: str) -> None:
        result = self.container.exec_run(["sh", "-c", command])
        assert result.exit_code == 0, result.output

    def break_health(self) -> None:
        self.sh("rm -f /tmp/www/health")  # busybox httpd answers 404: the check's expected 200 fails

    def fix_health(self) -> None:
        self.sh("echo ok > /tmp/www/health")


@pytest.fixture(name="backend")
def backend_fixture():
    client = docker_client()
    if client is None:
        if os.environ.get("CI"):
            pytest.fail("no Docker engine reachable in CI (.ci/run must start dockerd)")
        pytest.skip("no Docker engine reachable (start dockerd; .ci/run does)")
    name, port = f"charhub-ops-test-backend-{uuid.uuid4().hex[:8]}", free_port()
    stop(client, name)
    client.containers.run(ensure_busybox_image(client), ["sh", "-c", SCRIPT], name=name, detach=True, init=True,
                          labels={"charhub-ops-test": "app"}, ports={"8080/tcp": ("127.0.0.1", port)})
    backend = Backend(client, name, port)
    _wait_answering(backend.url)
    yield backend
    stop(client, name)
    client.close()


def _wait_answering(url: str, timeout: float = 20.0) -> None:
    """Until httpd answers (a fresh container needs a moment before its port accepts connections)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def write_config(path: Path, checks: list[dict], **extra) -> str:
    config = {"checks": checks, "incident_dir": str(path / "incidents"), **extra}
    file = path / f"monitor-{uuid.uuid4().hex[:6]}.yaml"
    file.write_text(yaml.safe_dump(config))
    return str(file)


@pytest.fixture(name="small_tmpfs")
def small_tmpfs_fixture(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (root needed): {done.stderr.decode()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)
