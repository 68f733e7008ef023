"""A scratch PostgreSQL on a restored data directory: start it, wait until recovery finished, stop and remove it.

Contracts:

``LocalScratch(datadir, owner)``
    A restored directory on this host. ``start(base, timeout)`` runs the directory's own major version's
    ``pg_ctl`` as ``owner`` on a free port, listening on a Unix socket inside the directory only (no TCP,
    its own ``pg_hba.conf``: trust on that socket — see ``HBA``), with ``archive_mode=off`` (pgBackRest's
    ``--archive-mode=off`` also wrote it) and the log in ``<datadir>/scratch.log``; then waits until recovery
    ended (``pg_is_in_recovery()`` false) and it accepts connections. Recovery that fails (a target after the
    end of the archive, a missing WAL segment) raises ``DatabaseError`` with the server's own FATAL line.
    ``url(base)`` is ``base`` (user, password, database) pointed at the scratch socket; ``session(base)`` a
    ``SqlSession`` on it. ``remove()`` stops it (immediate) and deletes the directory; never raises.
``scratch_copy(pgb, target, base, work_dir) -> Iterator[(LocalScratch, RestoreResult)]``
    Restore ``target`` into a new directory under ``work_dir``, start it, yield it, and always remove it
    (also when the restore or the start fails). With the database in a container (``pgb.container``): a new
    container and volume instead (:class:`charhub_ops.pitr.scratch_container.ScratchContainer`), removed too.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from charhub_ops.errors import ConfigError, DatabaseError
from charhub_ops.pgurl import PgUrl
from charhub_ops.pitr.command import PgBackRest
from charhub_ops.pitr.restore import RestoreResult, Target, data_owner, restore_local
from charhub_ops.postgres import PsycopgSession, SqlSession

__all__ = ["LocalScratch", "scratch_copy", "free_port", "last_fatal", "server_options"]

LOG = "scratch.log"
# The scratch instance's own pg_hba.conf: trust on its Unix socket only. The socket lies in the data directory
# (0700, the owner's): only that user and root can reach it, and there is no TCP listener. The live cluster's
# rules (peer, scram with passwords the operator may not have here) would otherwise decide who may check it.
HBA = "scratch_hba.conf"
HBA_TEXT = "local all all trust\n"


def server_options(port: int, datadir: str) -> str:
    """pg_ctl -o for a scratch instance: private socket, no TCP, no archiving, our hba file, log on stderr."""
    return (f"-p {port} -k {datadir} -c listen_addresses='' -c archive_mode=off -c hba_file={datadir}/{HBA} "
            "-c logging_collector=off -c log_destination=stderr -c cluster_name=charhub-ops-scratch")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def last_fatal(log_text: str) -> str:
    """The server's last FATAL/PANIC line (else its last line), for a one-line error."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    fatal = [line for line in lines if "FATAL:" in line or "PANIC:" in line]
    line = (fatal or lines or ["no log output"])[-1]
    return line.split("FATAL:", 1)[-1].split("PANIC:", 1)[-1].strip()[:300]


def _bindir(datadir: Path) -> Path:
    try:
        major = (datadir / "PG_VERSION").read_text().strip()
    except OSError as exc:
        raise DatabaseError(f"scratch: {datadir} is not a restored data directory ({exc.strerror})") from exc
    bindir = Path(f"/usr/lib/postgresql/{major}/bin")
    if not (bindir / "pg_ctl").exists():
        raise ConfigError(f"scratch: PostgreSQL {major} server binaries are not installed here ({bindir}); "
                          "the restored cluster needs its own major version")
    return bindir


class LocalScratch:
    def __init__(self, datadir: str | os.PathLike, owner: pwd.struct_passwd) -> None:
        self.datadir = Path(datadir)
        self.owner = owner
        self.port: int | None = None
        self.started_at: float | None = None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        as_owner = {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []} \
            if os.geteuid() == 0 and os.geteuid() != self.owner.pw_uid else {}
        proc = subprocess.run([str(_bindir(self.datadir) / "pg_ctl"), "-D", str(self.datadir), *args],
                              capture_output=True, text=True, **as_owner)
        if check and proc.returncode != 0:
            raise DatabaseError(f"scratch: pg_ctl {args[0]}: {self._failure(proc.stderr)}")
        return proc

    def _failure(self, fallback: str) -> str:
        try:
            return last_fatal((self.datadir / LOG).read_text(errors="replace"))
        except OSError:
            return fallback.strip().splitlines()[-1] if fallback.strip() else "failed"

    def start(self, base: PgUrl, timeout: float = 3600.0) -> None:
        """Start it and wait (connecting as ``base``'s user to ``base``'s database) until recovery ended."""
        self.port = free_port()
        hba = self.datadir / HBA
        hba.write_text(HBA_TEXT)
        if os.geteuid() == 0:
            os.chown(hba, self.owner.pw_uid, self.owner.pw_gid)
        options = server_options(self.port, str(self.datadir))
        # -w: pg_ctl returns once it accepts connections (consistent, still replaying) or reports its death
        self._run("-o", options, "-l", str(self.datadir / LOG), "-w", "-t", str(int(timeout)), "start")
        self.started_at = time.monotonic()
        self._wait(self.url(base), timeout)

    def url(self, base: PgUrl, dbname: str | None = None) -> PgUrl:
        """``base``'s user, password and database (or ``dbname``) on the scratch instance's socket."""
        params = {k: v for k, v in base.params.items() if k not in ("host", "hostaddr", "port", "service")}
        url = PgUrl("", params, base.setting, base.prisma_schema)
        return url.with_params(host=str(self.datadir), port=str(self.port), dbname=dbname or base.dbname)

    def session(self, base: PgUrl, dbname: str | None = None) -> SqlSession:
        return PsycopgSession(self.url(base, dbname))

    def _running(self) -> bool:
        return self._run("status", check=False).returncode == 0

    @staticmethod
    def _in_recovery(url: PgUrl) -> bool | None:
        """True/False once it answers, None while it does not accept connections yet."""
        try:
            with psycopg.connect(url.conninfo, autocommit=True, connect_timeout=5,
                                 application_name="charhub-ops:scratch") as conn:
                return bool(conn.execute("SELECT pg_is_in_recovery()").fetchone()[0])
        except psycopg.Error:
            return None

    def _wait(self, url: PgUrl, timeout: float) -> None:
        deadline, delay = time.monotonic() + timeout, 0.05
        while True:
            if self._in_recovery(url) is False:
                return
            if not self._running() and self._in_recovery(url) is None:
                raise DatabaseError(f"scratch: the restored instance stopped during recovery: {self._failure('')}")
            if time.monotonic() > deadline:
                raise DatabaseError(f"scratch: recovery did not finish within {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def remove(self) -> None:
        """Stop (immediate) and delete the data directory; never raises."""
        try:
            self._run("-m", "immediate", "stop", check=False)
        except (OSError, DatabaseError, ConfigError):
            pass
        shutil.rmtree(self.datadir, ignore_errors=True)


def _work_base(work_dir: str | None) -> Path:
    base = Path(tempfile.mkdtemp(prefix="charhub-ops-pitr-scratch-", dir=work_dir))
    base.chmod(0o755)  # the data directory's owner must reach it
    return base


@contextmanager
def scratch_copy(pgb: PgBackRest, target: Target, base: PgUrl, work_dir: str | None = None,
                 timeout: float = 3600.0) -> Iterator[tuple[LocalScratch, RestoreResult]]:
    """Restore ``target`` into a new directory (or, with ``pgb.container``, a new container and volume), start it,
    yield (instance, restore result); always removed. Both instances have ``url(base)`` and ``session(base)``."""
    if pgb.container:
        yield from _container_copy(pgb, target, base, timeout)
        return
    parent = _work_base(work_dir)
    scratch = LocalScratch(parent / "data", data_owner(pgb.pitr))
    try:
        restored = restore_local(pgb, target, scratch.datadir)
        scratch.start(base, timeout)
        yield scratch, restored
    finally:
        scratch.remove()
        shutil.rmtree(parent, ignore_errors=True)


def _container_copy(pgb: PgBackRest, target: Target, base: PgUrl, timeout: float):
    from charhub_ops.pitr.scratch_container import ScratchContainer

    scratch = ScratchContainer(pgb, f"charhub-ops-scratch-{uuid.uuid4().hex[:12]}")
    started = time.monotonic()
    try:
        scratch.create()
        scratch.restore(target)
        restored = RestoreResult(target=target.describe(), into=scratch.volume, seconds=time.monotonic() - started,
                                 container=scratch.name)
        scratch.start(base, timeout)
        yield scratch, restored
    finally:
        scratch.remove()
