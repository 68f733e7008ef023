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
