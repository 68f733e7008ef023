"""The container path: pgBackRest inside the PostgreSQL container, driven through the Docker API (as pg_dump is),
with its configuration written there by `pitr setup` and a posix repository on a bind mount."""

from __future__ import annotations

import uuid

import pytest

from tests.harness.docker_pg import require_docker
from tests.harness.pitr import CONTAINER_CONFIG, pgbackrest_available, start_pitr_container
from tests.test_pitr_core import PASS, ok_json, one_error, pitr

pytestmark = pytest.mark.skipif(not pgbackrest_available(), reason="pgbackrest is not installed (apt-get install "
                                                                   "pgbackrest; .ci/run installs it)")


@pytest.fixture
def container():
    client = require_docker()
    c = start_pitr_container(client, f"charhub-ops-test-pitr-core-{uuid.uuid4().hex[:8]}", stanza="incontainer")
    yield c
    c.remove()


def test_setup_twice_and_a_full_backup_through_the_docker_api(container):
    assert ok_json(pitr(container, "setup", "--json"))["created"] is True
    assert ok_json(pitr(container, "setup", "--json"))["created"] is False
    full = ok_json(pitr(container, "backup", "--json"))
    assert full["type"] == "full" and full["label"].endswith("F")
    info = ok_json(pitr(container, "info", "--json"))
    assert [b["label"] for b in info["backups"]] == [full["label"]] and info["wal_max"] >= full["wal_stop"]
    assert sorted(p.name for p in container.repo.iterdir()) == ["archive", "backup"]  # on the bind mount
    ct = container.pg.client.containers.get(container.name)
    mode = ct.exec_run(["stat", "-c", "%a %u", CONTAINER_CONFIG]).output.decode().split()
    owner = ct.exec_run(["stat", "-c", "%u", "/tmp/pgdata"]).output.decode().strip()
    assert mode == ["640", owner]
    processes = ct.exec_run(["ps", "-o", "args"]).output.decode()
    assert PASS not in processes  # the passphrase is in the file, never on a command line


def test_a_missing_container_is_one_line(container):
    one_error(pitr(container, "info", CHARHUB_OPS_DOCKER_CONTAINER="charhub-ops-test-no-such-container"),
              "container 'charhub-ops-test-no-such-container' not found")
    one_error(pitr(container, "info", CHARHUB_OPS_PITR_PG_PATH="/nonexistent"),
              f"pitr_pg_path: '/nonexistent' does not exist in container {container.name}")
