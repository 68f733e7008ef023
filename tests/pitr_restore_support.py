"""Shared by tests/test_pitr_restore*.py: a configured archiving cluster with backups, and WAL helpers."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import pytest

from charhub_ops.pgurl import parse_pg_url
from charhub_ops.pitr import ops
from charhub_ops.pitr.ops import Pitr, connect
from charhub_ops.settings import PitrSettings, load_settings
from tests.harness.pitr import PitrCluster, pgbackrest_available, start_archiving_cluster

CIPHER = "restore-test-passphrase-7f3a"


@contextmanager
def patched_env(env: dict[str, str]):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def cluster_env(cluster: PitrCluster) -> dict[str, str]:
    return {**cluster.settings_env(), "CHARHUB_OPS_PITR_CIPHER_PASS": CIPHER}


def core(cluster: PitrCluster) -> Pitr:
    """The core's wiring (settings → PgBackRest, config text) for this cluster."""
    with patched_env(cluster_env(cluster)):
        return connect(load_settings())


def configure(cluster: PitrCluster) -> None:
    pitr = core(cluster)
    ops.setup(pitr.pgb, pitr.config_text())


def backup(cluster: PitrCluster, kind: str = "full"):
    return ops.backup(core(cluster).pgb, kind)


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
