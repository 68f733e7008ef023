"""A service's running release as the Docker engine's inspect shows it: everything needed to create the same
container again, and nothing that only describes one container instance (its id, state, addresses).

The named fields (image id and tag, env, ports, mounts, networks with their aliases, labels, restart
policy, health check, cmd / entrypoint, user, workdir, hostname) are what previews and reports show;
``config_rest`` and ``host_config_rest`` keep the other keys of the inspect's ``Config`` and ``HostConfig``
verbatim (init, tmpfs, resources, log driver, capabilities…), so a container created from a record
inspects like the one it was read from.

A record holds environment values, which may be secrets: it is kept in the repository (never in a Prefect
Variable, event or artifact; age-encrypted with the backup recipients when there are any, see
:mod:`.releases`); :meth:`ServiceRecord.summary` shows variable names only, and the logs a rollback report
shows are masked with every value of the environment (:func:`charhub_ops.monitoring.redact.env_values`).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

__all__ = ["NetworkRecord", "ServiceRecord", "from_inspect", "create_body"]

_CONFIG_NAMED = ("Image", "Env", "Cmd", "Entrypoint", "User", "WorkingDir", "Hostname", "Labels", "Healthcheck")
_HOST_NAMED = ("PortBindings", "Binds", "Mounts", "RestartPolicy", "NetworkMode")


class NetworkRecord(BaseModel):
    aliases: list[str] = Field(default_factory=list, description="Without the engine's own (the container id)")
    ipv4_address: str | None = Field(None, description="A static address (IPAMConfig), None: assigned")
    ipv6_address: str | None = None
    links: list[str] = Field(default_factory=list)

    def endpoint(self) -> dict:
        """The endpoint settings of the create / connect API."""
        ipam = {k: v for k, v in (("IPv4Address", self.ipv4_address), ("IPv6Address", self.ipv6_address)) if v}
        return {"Aliases": self.aliases or None, "Links": self.links or None, "IPAMConfig": ipam or None}


class ServiceRecord(BaseModel):
    service: str = Field(description="The container name")
    container_id: str
    image_id: str = Field(description="sha256:… of the image the container runs")
    tag: str = Field(description="The image as the container was created with it (Config.Image)")
    recorded_at: datetime
    env: list[str] = Field(default_factory=list)
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    user: str = ""
    workdir: str = ""
    hostname: str | None = Field(None, description="None: the engine's default (the container id)")
    labels: dict[str, str] = Field(default_factory=dict)
    healthcheck: dict | None = None
    ports: dict[str, list[dict] | None] = Field(default_factory=dict, description="HostConfig.PortBindings")
    binds: list[str] = Field(default_factory=list, description="HostConfig.Binds (named volumes, bind mounts)")
    mounts: list[dict] = Field(default_factory=list, description="HostConfig.Mounts (--mount)")
    anonymous_volumes: dict[str, str] = Field(
        default_factory=dict, description="Destination → volume name of anonymous volumes (carried over)")
    restart_policy: dict = Field(default_factory=dict)
    network_mode: str = "default"
    networks: dict[str, NetworkRecord] = Field(default_factory=dict)
    config_rest: dict = Field(default_factory=dict, description="The other keys of Config, verbatim")
    host_config_rest: dict = Field(default_factory=dict, description="The other keys of HostConfig, verbatim")

    def volumes(self) -> list[str]:
        """Names of the volumes the service uses (named, anonymous and --mount ones)."""
        named = [b.split(":", 1)[0] for b in self.binds if not b.startswith("/")]
        named += [m["Source"] for m in self.mounts if m.get("Type") == "volume" and m.get("Source")]
        return sorted({*named, *self.anonymous_volumes.values()})

    def summary(self) -> dict:
        """What previews, artifacts and JSON show: environment variable names, never their values."""
        return {"service": self.service, "image_id": self.image_id, "tag": self.tag,
                "env_names": sorted(e.split("=", 1)[0] for e in self.env), "ports": self.ports,
                "volumes": self.volumes(), "networks": {n: r.aliases for n, r in self.networks.items()},
                "restart_policy": self.restart_policy.get("Name") or "no", "healthcheck": bool(self.healthcheck)}


def _declared_destinations(binds: list[str], mounts: list[dict]) -> set[str]:
    return {b.split(":")[1] for b in binds if ":" in b} | {m.get("Target") for m in mounts}


def _networks(attrs: dict) -> dict[str, NetworkRecord]:
    own = {attrs["Id"], attrs["Id"][:12]}
    found = {}
    for name, ep in ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).items():
        ipam = ep.get("IPAMConfig") or {}
        found[name] = NetworkRecord(aliases=[a for a in ep.get("Aliases") or [] if a not in own],
                                    ipv4_address=ipam.get("IPv4Address") or None,
                                    ipv6_address=ipam.get("IPv6Address") or None, links=ep.get("Links") or [])
    return found


def from_inspect(attrs: dict, now: datetime) -> ServiceRecord:
    """The record of the container whose ``docker inspect`` (``container.attrs``) is ``attrs``."""
    cfg, host = attrs.get("Config") or {}, attrs.get("HostConfig") or {}
    binds, mounts = host.get("Binds") or [], host.get("Mounts") or []
    declared = _declared_destinations(binds, mounts)
    anonymous = {m["Destination"]: m["Name"] for m in attrs.get("Mounts") or []
                 if m.get("Type") == "volume" and m.get("Destination") not in declared}
    hostname = cfg.get("Hostname")
    return ServiceRecord(
        service=attrs["Name"].lstrip("/"), container_id=attrs["Id"], image_id=attrs["Image"],
        tag=cfg.get("Image") or attrs["Image"], recorded_at=now, env=cfg.get("Env") or [], cmd=cfg.get("Cmd"),
        entrypoint=cfg.get("Entrypoint"), user=cfg.get("User") or "", workdir=cfg.get("WorkingDir") or "",
        hostname=None if hostname == attrs["Id"][:12] else hostname, labels=cfg.get("Labels") or {},
        healthcheck=cfg.get("Healthcheck"), ports=host.get("PortBindings") or {}, binds=binds, mounts=mounts,
        anonymous_volumes=anonymous, restart_policy=host.get("RestartPolicy") or {},
        network_mode=host.get("NetworkMode") or "default", networks=_networks(attrs),
        config_rest={k: v for k, v in cfg.items() if k not in _CONFIG_NAMED},
        host_config_rest={k: v for k, v in host.items() if k not in _HOST_NAMED})


def create_body(record: ServiceRecord, image: str) -> tuple[dict, dict[str, dict]]:
    """The body of ``POST /containers/create`` for ``record`` running ``image`` (a tag or an id), and the
    endpoints of the networks to connect after creation (the create call takes one network)."""
    config = {**record.config_rest, "Image": image, "Env": record.env, "Cmd": record.cmd,
              "Entrypoint": record.entrypoint, "User": record.user, "WorkingDir": record.workdir,
              "Labels": record.labels, "Healthcheck": record.healthcheck}
    if record.hostname:
        config["Hostname"] = record.hostname
    anonymous = [f"{name}:{dest}" for dest, name in record.anonymous_volumes.items()]
    config["HostConfig"] = {**record.host_config_rest, "PortBindings": record.ports or None,
                            "Binds": [*record.binds, *anonymous] or None, "Mounts": record.mounts or None,
                            "RestartPolicy": record.restart_policy or None, "NetworkMode": record.network_mode}
    mode = "bridge" if record.network_mode == "default" else record.network_mode  # default: the bridge network
    first = mode if mode in record.networks else None
    if first:
        config["NetworkingConfig"] = {"EndpointsConfig": {first: record.networks[first].endpoint()}}
    later = {name: net.endpoint() for name, net in record.networks.items() if name != first}
    return config, later
