"""Container mode: `pitr restore` into a NEW container and volume (busybox + the host's PostgreSQL/pgbackrest)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime

import docker
import pytest

from charhub_ops.errors import ConfigError
from charhub_ops.pgurl import parse_pg_url
from charhub_ops.pitr import ops
from charhub_ops.pitr.ops import connect
from charhub_ops.pitr.restore import Target, restore_into
from charhub_ops.pitr.scratch_container import ScratchContainer
from charhub_ops.settings import load_settings
from tests.harness.docker_pg import require_docker
from tests.harness.pitr import start_pitr_container
from tests.pitr_restore_support import CIPHER, patched_env, require_pgbackrest


@pytest.fixture(scope="module")
def live():
    require_pgbackrest()
    client = require_docker()
    pc = start_pitr_container(client, f"charhub-ops-test-pitr-restore-{os.getpid()}", stanza="crestore")
    with patched_env({**pc.settings_env(), "CHARHUB_OPS_PITR_CIPHER_PASS": CIPHER}):
        pitr = connect(load_settings(), client=client)
    ops.setup(pitr.pgb, pitr.config_text())
    pc.pg.psql("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before backup')")
    ops.backup(pitr.pgb, "full")
    yield pc, pitr, client
    pc.remove()


def _archive(pc) -> None:
    segment = pc.pg.psql("SELECT pg_walfile_name(pg_switch_wal())").strip()
    deadline = time.monotonic() + 60
    while pc.pg.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").strip() < segment:
        assert time.monotonic() < deadline, "WAL not archived"
        time.sleep(0.3)


def test_restore_into_a_new_container_and_volume(live):
    pc, pitr, client = live
    pc.pg.psql("INSERT INTO kept VALUES ('after backup')")
    _archive(pc)
    volume = f"charhub-ops-test-pitr-{uuid.uuid4().hex[:8]}"
    live_mounts = {m.get("Name") or m.get("Source") for m in client.containers.get(pc.name).attrs["Mounts"]}
    result = restore_into(pitr.pgb, Target.latest(), volume)
    scratch = ScratchContainer(pitr.pgb, volume, client)
    try:
        assert (result.container, result.into) == (scratch.name, volume)
        assert volume not in live_mounts
        base = parse_pg_url("postgresql://postgres@localhost/postgres")  # as seen inside the container
        scratch.start(base)
        with scratch.session(base) as session:
            rows = sorted(str(r[0]) for r in session.query("SELECT v FROM kept"))
            assert str(session.query("SHOW archive_mode")[0][0]) == "off"
        assert rows == ["after backup", "before backup"]
        with pytest.raises(ConfigError, match="already exists"):
            restore_into(pitr.pgb, Target.latest(), volume)
    finally:
        scratch.remove()
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(volume)
    assert pc.pg.psql("SELECT count(*) FROM kept").strip() == "2"  # the live one untouched


INSIDE = "postgresql://postgres@/postgres?host=/var/run/postgresql"  # the live database as seen in its container


def test_verify_in_a_scratch_container(live):
    from charhub_ops.pitr.verify import verify

    pc, pitr, client = live
    result = verify(pitr.pgb, parse_pg_url(INSIDE), hash_limit_bytes=32 << 20)
    assert result.ok, result.mismatches
    assert result.tables >= 1 and result.hashed_tables == result.tables
    scratch = "charhub-ops-pitr-charhub-ops-scratch-"  # ScratchContainer's name for scratch_copy's volumes
    assert not [c for c in client.containers.list(all=True) if c.name.startswith(scratch)]  # removed
    assert not [v for v in client.volumes.list() if v.name.startswith("charhub-ops-scratch-")]


def test_recover_table_between_containers(live):
    from charhub_ops.pitr.recover import plan_recovery, recover_table
    from charhub_ops.postgres import open_session

    pc, pitr, client = live
    pc.pg.psql("CREATE TABLE msgs (id int PRIMARY KEY, body text NOT NULL); "
               "INSERT INTO msgs SELECT g, 'm' || g FROM generate_series(1, 30) g")
    time.sleep(1.1)
    at = datetime.fromisoformat(pc.pg.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                           "'YYYY-MM-DD\"T\"HH24:MI:SS.US+00:00')").strip())
    time.sleep(1.1)
    pc.pg.psql("DELETE FROM msgs WHERE id > 3; INSERT INTO kept VALUES ('newer')")
    _archive(pc)
    url = parse_pg_url(INSIDE)
    with open_session(url, pc.name) as session:
        plan = plan_recovery(session, "msgs", at, "postgres")
    result = recover_table(pitr.pgb, plan, url)
    assert (result.rows, result.columns) == (30, 2)
    assert pc.pg.psql(f'SELECT count(*) FROM "{plan.new_name}"').strip() == "30"
    assert pc.pg.psql("SELECT count(*) FROM msgs").strip() == "3"
    assert pc.pg.psql("SELECT count(*) FROM kept WHERE v = 'newer'").strip() == "1"
    assert not [v for v in client.volumes.list() if v.name.startswith("charhub-ops-scratch-")]
