"""A PostgreSQL cluster that archives its WAL with pgBackRest, and a posix pgBackRest repository.

The cluster starts with ``archive_mode=on`` and ``archive_command = pgbackrest --config=<config> --stanza=<stanza>
archive-push %p`` before any configuration exists — as on a CharHub host where the compose override turned
archiving on and ``charhub-ops pitr setup`` has not run yet: PostgreSQL keeps the WAL and retries until setup
writes the configuration. Everything belongs to the ``postgres`` user (pgBackRest runs as the cluster's owner).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.harness.services import _as_postgres, _pg_bin, free_port

__all__ = ["PitrCluster", "start_archiving_cluster", "pgbackrest_available"]


def pgbackrest_available() -> bool:
    return shutil.which("pgbackrest") is not None


@dataclass
class PitrCluster:
    base: Path  # everything lives under it: data/, repo/, pgbackrest.conf, log
    port: int
    bin: Path
    stanza: str

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def repo(self) -> Path:
        return self.base / "repo"

    @property
    def config(self) -> Path:
        return self.base / "pgbackrest.conf"

    @property
    def socket_dir(self) -> Path:
        return self.base

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **kw) -> psycopg.Connection:
        return psycopg.connect(self.url(dbname), autocommit=True, **kw)

    def settings_env(self) -> dict[str, str]:
        """The environment that points charhub-ops's ``pitr`` commands at this cluster (local pgbackrest)."""
        return {"CHARHUB_OPS_DATABASE_URL": self.url(), "CHARHUB_OPS_PITR_REPOSITORY": f"file://{self.repo}",
                "CHARHUB_OPS_PITR_STANZA": self.stanza, "CHARHUB_OPS_PITR_PG_PATH": str(self.datadir),
                "CHARHUB_OPS_PITR_SOCKET_PATH": str(self.socket_dir),
                "CHARHUB_OPS_PITR_CONFIG_PATH": str(self.config)}

    def options(self) -> str:
        archive = f"pgbackrest --config={self.config} --stanza={self.stanza} archive-push %p"
        return (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c wal_level=replica -c archive_mode=on -c archive_timeout=60 "
                f"-c \"archive_command={archive}\"")

    def start(self) -> None:
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-o", self.options(),
                                     "-l", str(self.base / "log"), "-w", "start"]), check=True, capture_output=True)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "stop"]),
                       capture_output=True)

    def kill(self) -> None:
        """The instance dies (immediate stop) and its data directory is removed: only the repository remains."""
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def pgbackrest(self, *args: str) -> subprocess.CompletedProcess:
        """The raw tool, as the cluster's owner, for assertions and fixtures (the code under test never uses it)."""
        return subprocess.run(_as_postgres(["pgbackrest", f"--config={self.config}", f"--stanza={self.stanza}",
                                            *args]), capture_output=True, text=True)


def start_archiving_cluster(stanza: str = "charhub") -> PitrCluster:
    """A fresh cluster (UTF8) archiving through pgBackRest into ``<base>/repo``; not configured yet."""
    base = Path(tempfile.mkdtemp(prefix="charhub-ops-pitr-"))
    os.chmod(base, 0o755)
    (base / "repo").mkdir()
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for path in (base, base / "repo"):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    cluster = PitrCluster(base=base, port=free_port(), bin=_pg_bin(), stanza=stanza)
    subprocess.run(_as_postgres([str(cluster.bin / "initdb"), "-D", str(cluster.datadir), "-U", "postgres",
                                 "--auth=trust", "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)
    cluster.start()
    return cluster


# --- the container path and the S3 repository behind TLS (added by the core part of issue 19) -------------

CONTAINER_REPO = "/pgbackrest-repo"  # the posix repository's mount point inside the PostgreSQL container
CONTAINER_CONFIG = "/etc/pgbackrest/pgbackrest.conf"


@dataclass
class PitrContainer:
    """A PostgreSQL container archiving with the host's pgbackrest (bind-mounted read-only at /bin/pgbackrest;
    its libraries are under the already mounted /usr/lib/x86_64-linux-gnu) into a posix repository bind-mounted
    from ``repo`` (owned by postgres)."""

    pg: object  # tests.harness.docker_pg.PgContainer
    repo: Path
    stanza: str

    @property
    def name(self) -> str:
        return self.pg.name

    def settings_env(self) -> dict[str, str]:
        from tests.harness.docker_pg import PG_DATA, PG_SOCKET_DIR

        return {"CHARHUB_OPS_DATABASE_URL": "postgresql://postgres@localhost/postgres",
                "CHARHUB_OPS_DOCKER_CONTAINER": self.pg.name, "CHARHUB_OPS_PITR_REPOSITORY": f"file://{CONTAINER_REPO}",
                "CHARHUB_OPS_PITR_STANZA": self.stanza, "CHARHUB_OPS_PITR_PG_PATH": PG_DATA,
                "CHARHUB_OPS_PITR_SOCKET_PATH": PG_SOCKET_DIR, "CHARHUB_OPS_PITR_CONFIG_PATH": CONTAINER_CONFIG}

    def remove(self) -> None:
        from tests.harness.docker_pg import stop

        stop(self.pg.client, self.pg.name)
        shutil.rmtree(self.repo, ignore_errors=True)


def start_pitr_container(client, name: str, stanza: str = "charhub") -> PitrContainer:
    """``start_postgres_container`` with archiving through pgBackRest (not configured yet: setup writes
    ``/etc/pgbackrest/pgbackrest.conf`` in the container) and a repository bind mount."""
    from tests.harness.docker_pg import start_postgres_container

    repo = Path(tempfile.mkdtemp(prefix="charhub-ops-pitr-repo-"))
    pw = pwd.getpwnam("postgres")
    os.chown(repo, pw.pw_uid, pw.pw_gid)
    archive = f"/bin/pgbackrest --config={CONTAINER_CONFIG} --stanza={stanza} archive-push %p"
    options = {"wal_level": "replica", "archive_mode": "on", "archive_timeout": "60", "archive_command": archive}
    mounts = {"/usr/bin/pgbackrest": {"bind": "/bin/pgbackrest", "mode": "ro"},
              str(repo): {"bind": CONTAINER_REPO, "mode": "rw"}}
    try:
        pg = start_postgres_container(client, name, server_options=options, extra_volumes=mounts)
    except BaseException:
        shutil.rmtree(repo, ignore_errors=True)
        raise
    return PitrContainer(pg=pg, repo=repo, stanza=stanza)


@dataclass
class TlsS3:
    """moto's S3 server behind stunnel4 (TLS with a self-signed certificate for 127.0.0.1)."""

    endpoint: str  # https://127.0.0.1:<port>
    plain_endpoint: str  # moto's own http endpoint (for boto3 in fixtures)
    ca_file: Path  # the certificate to trust (pitr_s3_ca_file)
    processes: list
    base: Path

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)


def _wait_port(port: int, timeout: float = 30.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def start_tls_s3_server(bucket: str | None = None) -> TlsS3:
    """moto (tests.harness.services.start_s3_server) with stunnel4 in front; ``bucket`` is created if given."""
    from tests.harness.services import start_s3_server

    base = Path(tempfile.mkdtemp(prefix="charhub-ops-tls-s3-"))
    os.chmod(base, 0o755)
    cert, key = base / "cert.pem", base / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=DNS:127.0.0.1,IP:127.0.0.1"],
                   check=True, capture_output=True)
    os.chmod(cert, 0o644)
    s3 = start_s3_server()
    port = free_port()
    moto_port = int(s3.endpoint.rsplit(":", 1)[1])
    (base / "stunnel.conf").write_text(f"foreground = yes\npid =\n[s3]\naccept = 127.0.0.1:{port}\n"
                                       f"connect = 127.0.0.1:{moto_port}\ncert = {cert}\nkey = {key}\n")
    tunnel = subprocess.Popen(["stunnel4", str(base / "stunnel.conf")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    server = TlsS3(f"https://127.0.0.1:{port}", s3.endpoint, cert, [tunnel, s3.process], base)
    try:
        _wait_port(port)
        if bucket:
            import boto3

            boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1", aws_access_key_id="test",
                         aws_secret_access_key="test").create_bucket(Bucket=bucket)
    except BaseException:
        server.stop()
        raise
    return server
