"""A real PostgreSQL running inside a Docker container, built without pulling any image.

The image is imported from the host's static busybox (``charhub-ops-busybox:test``); the PostgreSQL
binaries, their libraries and timezone data are bind-mounted read-only from the host, and the
container runs as the host's ``postgres`` uid:gid so that ``initdb`` accepts it. Inside,
``docker exec NAME pg_dump -h /var/run/postgresql -U postgres DB`` works exactly as it does against
CharHub's ``postgres:16-alpine`` container.

Plain functions (usable from scripts and benchmarks) plus the session-scoped ``pg_container`` fixture.
"""

from __future__ import annotations

import grp
import io
import os
import pwd
import shlex
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import requests

__all__ = [
    "BUSYBOX_IMAGE",
    "DEFAULT_INITDB_ARGS",
    "PG_SOCKET_DIR",
    "PgContainer",
    "docker_client",
    "require_docker",
    "ensure_busybox_image",
    "OTHER_SETTINGS",
    "pg_container",
    "pg_other_settings",
    "pg_sql_ascii",
    "postgres_major_version",
    "start_postgres_container",
    "stop",
]

BUSYBOX_IMAGE = "charhub-ops-busybox:test"
PG_SOCKET_DIR = "/var/run/postgresql"
PG_DATA = "/tmp/pgdata"
DEFAULT_INITDB_ARGS = ("-E", "UTF8", "--locale=C.UTF-8")
_READ_ONLY_MOUNTS = (
    "/usr/lib/postgresql",
    "/usr/share/postgresql",
    "/usr/share/postgresql-common",
    "/usr/share/zoneinfo",
    "/usr/lib/locale",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/lib64",
    "/etc/passwd",
    "/etc/group",
)


@dataclass(frozen=True)
class PgContainer:
    """A running container with a PostgreSQL cluster listening on its Unix socket only."""

    name: str
    id: str
    major_version: int
    client: docker.DockerClient = field(repr=False, compare=False)
    port: int | None = None  # the host port published for TCP (start_postgres_container(tcp=True))

    def url(self, dbname: str = "postgres") -> str:
        """A URL reaching the cluster over TCP from the host (only with ``tcp=True``)."""
        if self.port is None:
            raise RuntimeError(f"{self.name} was started without tcp=True")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` with psql inside the container; return its unaligned, tuples-only output."""
        cmd = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", PG_SOCKET_DIR, "-U", "postgres",
               "-d", dbname, "-c", sql]
        return _exec(self.client.containers.get(self.id), cmd).decode()

    def stop(self) -> None:
        """Remove the container (force)."""
        stop(self.client, self.name)


def require_docker() -> docker.DockerClient:
    """A client for the local engine; without one, the test fails under CI (which provides every service: a skip
    there would hide a broken harness) and is skipped locally with the reason."""
    client = docker_client()
    if client is None:
        if os.environ.get("CI"):
            pytest.fail("no Docker engine reachable in CI (.ci/run must start dockerd)")
        pytest.skip("no Docker engine reachable (start dockerd; .ci/run does)")
    return client


def docker_client() -> docker.DockerClient | None:
    """A client for the local engine, or None when no engine is reachable."""
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException, OSError):
        return None
    return client


def ensure_busybox_image(client: docker.DockerClient) -> str:
    """Import ``charhub-ops-busybox:test`` from ``/bin/busybox`` unless it already exists; return its tag."""
    try:
        client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    applets = subprocess.run(["/bin/busybox", "--list"], check=True, capture_output=True, text=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # mkdtemp's 0700 would make / untraversable for the postgres uid
        for sub in ("bin", "etc", "tmp", "var/run/postgresql"):
            (root / sub).mkdir(parents=True, mode=0o755)
        for sub in ("tmp", "var/run/postgresql"):  # docker copies the image dir's mode onto a tmpfs over it
            (root / sub).chmod(0o1777)
        (root / "bin/busybox").write_bytes(Path("/bin/busybox").read_bytes())
        (root / "bin/busybox").chmod(0o755)
        for applet in applets:
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(root, arcname=".")
    repo, tag = BUSYBOX_IMAGE.split(":")
    client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)
    client.images.get(BUSYBOX_IMAGE)
    return BUSYBOX_IMAGE


def postgres_major_version(base: Path = Path("/usr/lib/postgresql")) -> int:
    """The highest PostgreSQL major version installed on the host (``/usr/lib/postgresql/N/bin/postgres``)."""
    versions = [int(p.name) for p in base.iterdir() if p.name.isdigit() and (p / "bin/postgres").exists()]
    if not versions:
        raise RuntimeError(f"no PostgreSQL server binaries under {base}")
    return max(versions)


def start_postgres_container(client: docker.DockerClient, name: str, *,
                             initdb_args: tuple[str, ...] = DEFAULT_INITDB_ARGS, initdb_env: dict | None = None,
                             server_options: dict[str, str] | None = None, tcp: bool = False,
                             extra_volumes: dict[str, dict] | None = None) -> PgContainer:
    """Start a container named ``name`` running an initialised, started cluster; wait until it is ready.

    ``initdb_args`` replace the encoding/locale arguments (``()`` = initdb's defaults under ``initdb_env``,
    e.g. ``{"LC_ALL": "C"}`` gives SQL_ASCII); ``server_options`` become ``-c name=value``; ``tcp`` publishes
    the server on a random 127.0.0.1 port (trust authentication from anywhere: a throwaway test cluster);
    ``extra_volumes`` are added to the read-only system mounts (docker SDK ``volumes`` form)."""
    image = ensure_busybox_image(client)
    major = postgres_major_version()
    uid = pwd.getpwnam("postgres").pw_uid
    gid = grp.getgrnam("postgres").gr_gid
    stop(client, name)
    container = client.containers.run(
        image,
        ["sleep", "infinity"],
        name=name,
        detach=True,
        init=True,  # tini as PID 1 reaps the orphans of terminated execs
        user=f"{uid}:{gid}",
        tmpfs={"/tmp": "mode=1777", PG_SOCKET_DIR: "mode=1777"},
        volumes={**{path: {"bind": path, "mode": "ro"} for path in _READ_ONLY_MOUNTS if os.path.exists(path)},
                 **(extra_volumes or {})},
        environment={"PATH": f"/usr/lib/postgresql/{major}/bin:/bin", "LC_ALL": "C.UTF-8", "TZ": "UTC"},
        labels={"charhub-ops-test": "postgres"},
        ports={"5432/tcp": ("127.0.0.1", None)} if tcp else {},
    )
    try:
        _exec(container, ["initdb", "-D", PG_DATA, "-U", "postgres", "--auth=trust", "--no-sync", *initdb_args],
              env=initdb_env)
        options = f"-k {PG_SOCKET_DIR} -c fsync=off -c listen_addresses=" + ("'*'" if tcp else "''")
        if tcp:  # docker-proxy connects from the bridge gateway, not from 127.0.0.1
            _exec(container, ["sh", "-c", f"echo 'host all all 0.0.0.0/0 trust' >> {PG_DATA}/pg_hba.conf"])
        for key, value in (server_options or {}).items():
            options += " -c " + shlex.quote(f"{key}={value}")
        _exec(container, ["pg_ctl", "-D", PG_DATA, "-o", options, "-l", "/tmp/postgres.log", "-w", "start"])
        _wait_ready(container)
    except BaseException:
        stop(client, name)
        raise
    return PgContainer(name=name, id=container.id, major_version=major, client=client,
                       port=_published_port(container) if tcp else None)


def _published_port(container) -> int:
    container.reload()
    return int(container.ports["5432/tcp"][0]["HostPort"])


def stop(client: docker.DockerClient, name: str) -> None:
    """Remove the container ``name`` (force); no error when it does not exist."""
    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


def _exec(container, cmd: list[str], env: dict | None = None) -> bytes:
    result = container.exec_run(cmd, demux=True, environment=env)
    stdout, stderr = result.output
    if result.exit_code != 0:
        raise RuntimeError(f"{cmd[0]} in {container.name}: exit {result.exit_code}: {(stderr or b'').decode()}")
    return stdout or b""


def _wait_ready(container, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = container.exec_run(["pg_isready", "-h", PG_SOCKET_DIR, "-U", "postgres"])
        if result.exit_code == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"postgres in {container.name} not ready after {timeout}s: {result.output!r}")
        time.sleep(0.1)


# A second server whose defaults differ from the first in every way that changes values printed as text.
OTHER_SETTINGS = {"timezone": "Asia/Kathmandu", "DateStyle": "SQL, DMY", "IntervalStyle": "postgres_verbose",
                  "extra_float_digits": "0"}


def _session_container(suffix: str, **options) -> Iterator[PgContainer]:
    client = require_docker()
    pg = start_postgres_container(client, f"charhub-ops-test-pg{suffix}-{os.getpid()}", **options)
    try:
        yield pg
    finally:
        pg.stop()
        client.close()


@pytest.fixture(scope="session")
def pg_container() -> Iterator[PgContainer]:
    """A running PostgreSQL container for the whole test session, removed at the end."""
    yield from _session_container("")


@pytest.fixture(scope="session")
def pg_other_settings() -> Iterator[PgContainer]:
    """``initdb -E UTF8 --locale=C``, started with another time zone, DateStyle, IntervalStyle and
    extra_float_digits (OTHER_SETTINGS); reachable over TCP (``.url()``) and through ``docker exec``."""
    yield from _session_container("-other", initdb_args=("-E", "UTF8", "--locale=C"), server_options=OTHER_SETTINGS,
                                  tcp=True)


@pytest.fixture(scope="session")
def pg_sql_ascii() -> Iterator[PgContainer]:
    """A cluster initialised under ``LANG=C``: encoding SQL_ASCII (psycopg returns bytes there unless the
    client encoding is set); reachable over TCP (``.url()``) and through ``docker exec``."""
    yield from _session_container("-ascii", initdb_args=(), initdb_env={"LC_ALL": "C", "LANG": "C"}, tcp=True)
