"""Shared by tests/test_pitr_restore*.py: a configured archiving cluster with backups, and WAL helpers."""

from __future__ import annotations

import os
import pwd
import time

import pytest

from charhub_ops.pgurl import parse_pg_url
from charhub_ops.settings import PitrSettings
from tests.harness.pitr import PitrCluster, pgbackrest_available, start_archiving_cluster


class RawRunner:
    """Stand-in for the core's PgBackRest until it is merged: the harness's raw tool, errors raised."""

    def __init__(self, cluster: PitrCluster) -> None:
        self.cluster = cluster

    def run(self, command: str, *options: str) -> str:
        proc = self.cluster.pgbackrest(command, *options)
        if proc.returncode != 0:
            from charhub_ops.errors import DatabaseError

            raise DatabaseError(f"pgbackrest: {command}: {proc.stderr.strip().splitlines()[0]}")
        return proc.stdout


def configure(cluster: PitrCluster) -> None:
    cluster.config.write_text(f"""[global]
repo1-path={cluster.repo}
repo1-retention-full=2
log-level-console=warn
log-level-file=off
start-fast=y
lock-path={cluster.base}/lock
[{cluster.stanza}]
pg1-path={cluster.datadir}
pg1-port={cluster.port}
pg1-socket-path={cluster.socket_dir}
""")
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(cluster.config, pw.pw_uid, pw.pw_gid)
    for args in (("stanza-create",), ("check",)):
        proc = cluster.pgbackrest(*args)
        assert proc.returncode == 0, proc.stderr


def backup(cluster: PitrCluster, kind: str = "full") -> None:
    proc = cluster.pgbackrest("backup", f"--type={kind}")
    assert proc.returncode == 0, proc.stderr


def pitr_settings(cluster: PitrCluster) -> PitrSettings:
    return PitrSettings(repository=f"file://{cluster.repo}", stanza=cluster.stanza, pg_path=str(cluster.datadir),
                        socket_path=str(cluster.socket_dir), config_path=str(cluster.config))


def base_url(cluster: PitrCluster, dbname: str = "postgres"):
    return parse_pg_url(cluster.url(dbname))


def archive_now(cluster: PitrCluster, timeout: float = 60) -> str:
    """Switch WAL and wait until the closed segment is archived; returns its name."""
    with cluster.connect() as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        deadline = time.monotonic() + timeout
        while True:
            done = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
            if done and done >= segment:
                return segment
            if time.monotonic() > deadline:
                raise AssertionError(f"segment {segment} not archived after {timeout}s (last {done})")
            time.sleep(0.2)


def require_pgbackrest() -> None:
    if not pgbackrest_available():
        if os.environ.get("CI"):
            pytest.fail("pgbackrest not installed in CI (.ci/run installs it)")
        pytest.skip("pgbackrest not installed (apt-get install pgbackrest)")


def new_cluster(stanza: str) -> PitrCluster:
    require_pgbackrest()
    cluster = start_archiving_cluster(stanza)
    configure(cluster)
    return cluster
