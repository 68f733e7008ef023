"""Container mode of ``pitr restore`` / ``verify``: the copy lives in a NEW container with a NEW named volume.

When the database runs in a container (``docker_container``), its data directory is a volume that nothing but
that container may ever mount (FIELD-NOTES: a second PostgreSQL on a live volume lost all data once). So:

``ScratchContainer(pgb, volume, client=None)`` — ``create()``:
    refuses (ConfigError naming ``--into``) a volume name that exists; creates the volume (label
    ``charhub-ops=pitr-restore``) and a container ``charhub-ops-pitr-<volume>`` from ``pitr_image`` (default:
    the database container's image) running ``sleep infinity``, with the new volume at ``pitr_pg_path``, the
    live container's user, its tmpfs mounts, its PATH/locale environment (never its secrets), its read-only
    bind mounts (software, certificates) and — for a posix repository — the mount holding the repository;
    an S3/R2 repository is reached over the network. The live container's ``pitr_config_path`` is copied
    into it (``PgBackRest.install_config``: 0640, never on a command line). Then ``pgbackrest restore`` runs
    there (``--archive-mode=off``, as in local mode).
    ``start(base, timeout)``: ``pg_ctl start`` in it (socket in the data directory only, its own hba file,
    archive_mode off — :func:`charhub_ops.pitr.scratch.server_options`),
    waits until recovery ended. ``session(base)``: a psql session inside it (``SqlSession``).
    ``remove()``: the container and its volume (only ever these two, by the names it created).
``restore_container(pgb, target, volume) -> RestoreResult``: create + restore; the container stays (stopped
PostgreSQL, ``sleep``) for the operator, who starts it (``docker exec … pg_ctl start``) or removes it.
"""

from __future__ import annotations

import time

import docker

from charhub_ops.docker_exec import ContainerExec, docker_errors
from charhub_ops.errors import ConfigError, DatabaseError
from charhub_ops.pgurl import PgUrl
from charhub_ops.pitr.command import PgBackRest
from charhub_ops.pitr.config import parse_repository
from charhub_ops.pitr.restore import RestoreResult, Target, preflight, restore_options
from charhub_ops.pitr.scratch import HBA, HBA_TEXT, LOG, last_fatal, server_options
from charhub_ops.postgres import DockerTools, SqlSession

__all__ = ["ScratchContainer", "restore_container"]

_ENV_KEEP = ("PATH=", "LANG=", "LC_", "TZ=", "PGDATA=", "LD_LIBRARY_PATH=")


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


class ScratchContainer:
    def __init__(self, pgb: PgBackRest, volume: str, client: docker.DockerClient | None = None) -> None:
        if not volume or "/" in volume:
            raise ConfigError(f"--into: '{volume}' is not a volume name (the database runs in a container: "
                              "--into names a NEW volume)")
        self.pgb, self.pitr, self.volume = pgb, pgb.pitr, volume
        self.name = f"charhub-ops-pitr-{volume}"
        self._client = client
        self.scratch_pgb: PgBackRest | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with docker_errors("connect"):
                self._client = docker.from_env()
        return self._client

    def _mounts(self, live) -> dict:
        repo = parse_repository(self.pitr.repository)
        mounts = {}
        for m in live.attrs.get("Mounts") or []:
            destination, source = m.get("Destination", ""), m.get("Name") or m.get("Source")
            repository = repo.kind == "posix" and _inside(repo.path, destination)
            if _inside(self.pitr.pg_path, destination) or _inside(destination, self.pitr.pg_path):
                continue  # never the live data directory's volume
            if repository or (m.get("Type") == "bind" and not m.get("RW", True)):
                mounts[source] = {"bind": destination, "mode": "rw" if repository else "ro"}
        mounts[self.volume] = {"bind": self.pitr.pg_path, "mode": "rw"}
        return mounts

    def create(self) -> None:
        with docker_errors("create the restore container", self.pgb.container):
            live = self.client.containers.get(self.pgb.container)
            if self.volume in {v.name for v in self.client.volumes.list()}:
                raise ConfigError(f"--into: volume '{self.volume}' already exists; pitr restore only writes into a "
                                  "new volume")
            self.client.volumes.create(self.volume, labels={"charhub-ops": "pitr-restore"})
            config = live.attrs.get("Config") or {}
            self.client.containers.run(
                self.pitr.image or live.image.id, entrypoint=["sleep", "infinity"], name=self.name, detach=True,
                init=True, user=config.get("User") or "", volumes=self._mounts(live),
                tmpfs=(live.attrs.get("HostConfig") or {}).get("Tmpfs") or {},
                environment=[e for e in config.get("Env") or [] if e.startswith(_ENV_KEEP)],
                labels={"charhub-ops": "pitr-restore"})
        owner = self.pgb.container_owner()
        ContainerExec(self.name, self.client).run(
            ["sh", "-c", 'chown "$1" "$2" && chmod 700 "$2"', "sh", owner, self.pitr.pg_path], user="0")
        text = ContainerExec(self.pgb.container, self.client).run(["cat", self.pitr.config_path], user=owner)
        self.scratch_pgb = PgBackRest(self.pitr, container=self.name, client=self.client, secrets=self.pgb.secrets)
        self.scratch_pgb.install_config(text.decode())

    def restore(self, target: Target) -> None:
        preflight(self.scratch_pgb)
        self.scratch_pgb.run("restore", *restore_options(target, self.pitr.pg_path))

    def _pg(self, *args: str) -> bytes:
        return ContainerExec(self.name, self.client).run(["pg_ctl", "-D", self.pitr.pg_path, *args],
                                                         user=self.pgb.container_owner())

    def url(self, base: PgUrl, dbname: str | None = None) -> PgUrl:
        params = {k: v for k, v in base.params.items() if k not in ("host", "hostaddr", "port", "service")}
        return PgUrl("", params, base.setting, base.prisma_schema).with_params(
            host=self.pitr.pg_path, port="5432", dbname=dbname or base.dbname)

    def session(self, base: PgUrl, dbname: str | None = None) -> SqlSession:
        return DockerTools(self.url(base, dbname), self.name).session()

    def start(self, base: PgUrl, timeout: float = 3600.0) -> None:
        ContainerExec(self.name, self.client).run(
            ["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", HBA_TEXT, f"{self.pitr.pg_path}/{HBA}"],
            user=self.pgb.container_owner())
        options = server_options(5432, self.pitr.pg_path)
        log = f"{self.pitr.pg_path}/{LOG}"
        try:
            self._pg("-o", options, "-l", log, "-w", "-t", str(int(timeout)), "start")
        except DatabaseError:
            raise DatabaseError(f"scratch: the restored instance did not start: {self._log_tail(log)}") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.session(base) as session:
                    if str(session.query("SELECT pg_is_in_recovery()")[0][0]) in ("f", "False", "false"):
                        return
            except DatabaseError:
                pass
            if time.monotonic() > deadline:
                raise DatabaseError(f"scratch: recovery did not finish within {timeout:.0f} s: {self._log_tail(log)}")
            time.sleep(0.5)

    def _log_tail(self, log: str) -> str:
        try:
            return last_fatal(ContainerExec(self.name, self.client).run(["cat", log], user="0").decode())
        except DatabaseError:
            return "no log"

    def remove(self) -> None:
        """The container and the volume this object created; never raises."""
        for remove in (lambda: self.client.containers.get(self.name).remove(force=True),
                       lambda: self.client.volumes.get(self.volume).remove(force=True)):
            try:
                remove()
            except (docker.errors.DockerException, OSError):
                pass


def restore_container(pgb: PgBackRest, target: Target, volume: str, client=None) -> RestoreResult:
    scratch = ScratchContainer(pgb, volume, client)
    started = time.monotonic()
    scratch.create()
    try:
        scratch.restore(target)
    except BaseException:
        scratch.remove()
        raise
    return RestoreResult(target=target.describe(), into=volume, seconds=time.monotonic() - started,
                         container=scratch.name)
