"""Versions of a small HTTP service, built locally from the busybox image (no registry): ``v1`` answers
``/health`` with 200, ``v2`` has no health file (busybox httpd answers 404) — and a service started the way
compose starts one: a named volume, a user-defined network with an alias, a published port, env, labels,
a restart policy, a Docker health check. :meth:`Service.run` replaces its container by one of another image
with the same options: what CharHub's deploy does."""

from __future__ import annotations

import io
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest

from tests.harness.docker_pg import BUSYBOX_IMAGE, ensure_busybox_image, require_docker
from tests.harness.monitor import new_id, write_config
from tests.harness.services import free_port

__all__ = ["V1", "V2", "build_image", "Service", "new_service", "service_fixture", "comparable", "deploy_env_fixture",
           "configure"]

V1, V2 = "charhub-ops-svc:v1", "charhub-ops-svc:v2"
_DOCKERFILE = """FROM {base}
ENV SERVICE_VERSION={version}
LABEL org.charhub.version="{version}"
RUN mkdir -p /www && echo {version} > /www/version{health}
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
"""


def build_image(client: docker.DockerClient, tag: str, version: str, healthy: bool,
                labels: dict[str, str] | None = None) -> str:
    """Build ``tag`` (a distinct image per ``version``, carrying ``labels``); returns its id."""
    ensure_busybox_image(client)
    text = _DOCKERFILE.format(base=BUSYBOX_IMAGE, version=version, health=" && echo ok > /www/health" if healthy
                              else "")
    image, _ = client.images.build(fileobj=io.BytesIO(text.encode()), tag=tag, rm=True, forcerm=True,
                                   labels=labels)
    return image.id


@dataclass
class Service:
    client: docker.DockerClient
    name: str
    port: int
    volume: str
    network: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    @property
    def container(self):
        return self.client.containers.get(self.name)

    def inspect(self) -> dict:
        return self.client.api.inspect_container(self.name)

    def sh(self, command: str) -> str:
        result = self.container.exec_run(["sh", "-c", command])
        assert result.exit_code == 0, result.output
        return result.output.decode()

    def run(self, image: str, env: dict[str, str] | None = None) -> None:
        """Replace the container (its volumes stay) by one of ``image`` with the same options (``env`` added)."""
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        self.client.containers.run(
            image, name=self.name, detach=True, init=True,
            environment={"APP_MODE": "test", "API_TOKEN": "t0ken", **(env or {})},
            ports={"8080/tcp": ("127.0.0.1", self.port)}, volumes={self.volume: {"bind": "/data", "mode": "rw"}},
            network=self.network,
            networking_config={self.network: self.client.api.create_endpoint_config(aliases=["web"])},
            labels={"charhub-ops-test": "service", "com.docker.compose.service": "web"},
            restart_policy={"Name": "unless-stopped"}, tmpfs={"/run": ""},
            healthcheck={"test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"],
                         "interval": 300_000_000_000, "timeout": 2_000_000_000, "retries": 3})

    def answers(self) -> int | None:
        """The health endpoint's status (None: no answer)."""
        try:
            with urllib.request.urlopen(self.url, timeout=2) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def remove(self) -> None:
        """Its containers (parked ones too), volume, network and last-good pins."""
        for c in self.client.containers.list(all=True, filters={"name": self.name}):
            c.remove(force=True)
        for image in self.client.images.list(name=f"charhub-ops/last-good-{self.name}"):
            for pin in image.tags:
                if pin.startswith(f"charhub-ops/last-good-{self.name}:"):
                    self.client.images.remove(pin)
        for remove in (lambda: self.client.networks.get(self.network).remove(),
                       lambda: self.client.volumes.get(self.volume).remove(force=True)):
            try:
                remove()
            except docker.errors.NotFound:
                pass


def new_service(client: docker.DockerClient, image: str = V1) -> Service:
    """A service running ``image`` with its own volume and network (``Service.remove`` removes them)."""
    suffix = uuid.uuid4().hex[:8]
    svc = Service(client, f"charhub-ops-test-web-{suffix}", free_port(), f"charhub-ops-test-data-{suffix}",
                  f"charhub-ops-test-net-{suffix}")
    client.networks.create(svc.network)
    client.volumes.create(svc.volume)
    svc.run(image)
    return svc


@pytest.fixture(name="service")
def service_fixture() -> Iterator[Service]:
    """A service running ``V1`` (both versions built), removed with its volume and network afterwards."""
    client = require_docker()
    build_image(client, V1, "1", healthy=True)
    build_image(client, V2, "2", healthy=False)
    svc = new_service(client)
    yield svc
    svc.remove()
    client.close()


def comparable(attrs: dict) -> dict:
    """What two containers of the same configuration share in ``docker inspect``: everything but the
    instance's own id, times, state, paths and addresses (and the hostname, the engine's default: the id)."""
    own = {attrs["Id"], attrs["Id"][:12]}
    networks = {name: {"Aliases": sorted(set(ep.get("Aliases") or []) - own), "IPAMConfig": ep.get("IPAMConfig"),
                       "Links": ep.get("Links")}
                for name, ep in attrs["NetworkSettings"]["Networks"].items()}
    return {"Name": attrs["Name"], "Image": attrs["Image"], "Path": attrs["Path"], "Args": attrs["Args"],
            "Driver": attrs["Driver"], "Platform": attrs["Platform"],
            **{f"Config.{k}": v for k, v in attrs["Config"].items() if k != "Hostname"},
            **{f"HostConfig.{k}": v for k, v in attrs["HostConfig"].items()},
            "Networks": networks,
            "Mounts": sorted((m["Type"], m.get("Name"), m["Destination"], m["RW"]) for m in attrs["Mounts"])}


@pytest.fixture(name="deploy_env")
def deploy_env_fixture(prefect_server, database, tmp_path, monkeypatch):
    """Repository, state store and gate settings of one test; returns the repository URL."""
    repo = f"file://{tmp_path}/repo"
    for key, value in {"CHARHUB_OPS_REPOSITORY": repo, "CHARHUB_OPS_DATABASE_URL": database,
                       "CHARHUB_OPS_MONITOR_STATE": f"file://{tmp_path}/state", "CHARHUB_OPS_DEPLOY_GATE_PASSES": "2",
                       "CHARHUB_OPS_DEPLOY_GATE_TIMEOUT": "4", "CHARHUB_OPS_DEPLOY_GATE_INTERVAL": "0.2"}.items():
        monkeypatch.setenv(key, value)
    return repo


def configure(service, tmp_path, monkeypatch, **extra) -> str:
    """One http check of ``service`` (``container:`` its name) as the monitor config; returns its id."""
    check = {"id": new_id("web"), "type": "http", "url": service.url, "timeout": 2, "latency_budget_ms": 2000,
             "container": service.name, "threshold": 1, **extra}
    config = write_config(tmp_path, [check])
    monkeypatch.setenv("CHARHUB_OPS_MONITOR_CONFIG", config)
    return check["id"]
