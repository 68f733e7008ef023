"""The archive check against a real cluster archiving through real pgBackRest (tests/harness/pitr.py): it goes
down while ``archive_command`` fails (no pgBackRest configuration yet), the incident's report carries the
``pg_stat_archiver`` row, and it recovers once the configuration and the stanza exist — through the monitor's
state machine, as the other checks' drills. The container path (psql in the database container) reads the
same row as psycopg."""

from __future__ import annotations

import os
import pwd
import re
import time
from datetime import UTC, datetime

import pytest

from charhub_ops.monitoring.archive import read_archiver
from charhub_ops.monitoring.checks import CheckContext, run_check
from charhub_ops.monitoring.config import MonitorConfig
from charhub_ops.monitoring.runner import context_for
from charhub_ops.monitoring.state import CheckState
from charhub_ops.pgurl import parse_pg_url
from charhub_ops.postgres import DockerTools, PsycopgSession
from charhub_ops.settings import load_settings
from flows.incident import incident_resolve_flow, incident_respond_flow
from tests.harness.monitor import new_id, passes, write_config
from tests.harness.pitr import start_archiving_cluster

URL_ENV = "CHARHUB_OPS_TEST_ARCHIVE_URL"
INSIDE = "postgresql://postgres@/postgres?host=/var/run/postgresql"  # the URL as seen in the container


@pytest.fixture
def cluster():
    c = start_archiving_cluster(new_id("wal"))
    yield c
    c.remove()


def _archiver(cluster) -> dict:
    with cluster.connect() as conn:
        cols = ("archived_count", "failed_count", "last_archived_time", "last_failed_time")
        return dict(zip(cols, conn.execute(f"SELECT {', '.join(cols)} FROM pg_stat_archiver").fetchone(),
                        strict=True))


def _write_wal(cluster) -> None:
    """A few rows and a segment switch: a segment is ready for archive_command (the archiver is woken)."""
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS drill (id serial, at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO drill DEFAULT VALUES")
        conn.execute("SELECT pg_switch_wal()")


def _until(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout:g} s"
        time.sleep(0.5)


def _configure_pgbackrest(cluster) -> None:
    """A minimal posix-repository configuration and the stanza (what `charhub-ops pitr setup` does)."""
    cluster.config.write_text(
        f"[global]\nrepo1-path={cluster.repo}\nrepo1-retention-full=2\nlog-level-console=warn\nstart-fast=y\n"
        f"log-path={cluster.base}\n\n[{cluster.stanza}]\npg1-path={cluster.datadir}\npg1-port={cluster.port}\n"
        f"pg1-socket-path={cluster.socket_dir}\n")
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(cluster.config, pw.pw_uid, pw.pw_gid)
    done = cluster.pgbackrest("stanza-create")
    assert done.returncode == 0, done.stderr


def test_archive_check_goes_down_when_archive_command_fails_and_recovers(cluster, prefect_server, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv(URL_ENV, cluster.url())
    cid = new_id("archive")
    config = write_config(tmp_path, [{"id": cid, "type": "archive", "database_url_env": URL_ENV,
                                      "threshold": 3, "recovery_threshold": 2, "severity": "high"}])
    _write_wal(cluster)
    _until(lambda: _archiver(cluster)["failed_count"] > 0, "failed archive_command")
    rows = passes(config, 3)
    assert [r["streak"] for r in rows] == [1, 2, 3] and [r["state"] for r in rows] == ["up", "up", "down"]
    assert "down" in rows[-1]["events"]
    assert "archiving is failing: last failure 000000010000000000000001" in rows[0]["detail"]
    result = incident_respond_flow(check_id=cid, config=config)
    assert result["status"] == "escalated" and result["actions"] == []  # the runbook has no mitigation
    report = open(result["report"]).read()
    assert "### WAL archiving" in report and "| last_failed_wal | 000000010000000000000001 |" in report

    _configure_pgbackrest(cluster)
    _write_wal(cluster)  # wakes the archiver, which retries the waiting segments
    _until(lambda: (a := _archiver(cluster))["last_archived_time"] is not None
           and a["last_archived_time"] > a["last_failed_time"], "archived segment after the fix")
    rows = passes(config, 4)  # a probe may still see failures from before the fix: then two passes recover it
    assert sum("recovered" in r["events"] for r in rows) == 1 and rows[-1]["state"] == "up"
    assert "no failure since the last probe" in rows[-1]["detail"]
    closed = incident_resolve_flow(check_id=cid, config=config)
    assert closed["resolved"] and closed["incident_id"] == result["incident_id"]


def test_the_failure_count_is_kept_between_probes(cluster):
    """A rise since the previous probe fails the probe even once a later segment archived."""
    check = MonitorConfig.model_validate({"checks": [{"id": "wal", "type": "archive"}]}).checks[0]
    _configure_pgbackrest(cluster)
    _write_wal(cluster)
    _until(lambda: _archiver(cluster)["archived_count"] > 0, "archived segment")
    first = run_check(check, CheckContext(now=datetime.now(UTC), database_url=cluster.url()))
    assert first.ok, first.detail
    assert first.facts["failed_count"] == 0 and first.facts["lsn"] > 0
    again = run_check(check, CheckContext(now=datetime.now(UTC), database_url=cluster.url(), archive_failed_count=-2,
                                          wal_lsn=first.facts["lsn"]))
    assert not again.ok and "archiving failed 2 times since the last probe" in again.detail


def test_backup_age_from_pgbackrest_info(cluster, monkeypatch):
    """With the pitr settings pointing at the cluster, each probe reads pgBackRest's info: no backup yet fails,
    a fresh full backup passes."""
    for key, value in cluster.settings_env().items():
        monkeypatch.setenv(key, value)
    _configure_pgbackrest(cluster)
    check = MonitorConfig.model_validate({"checks": [{"id": "wal", "type": "archive"}]}).checks[0]
    settings = load_settings()

    def probe():
        return run_check(check, context_for(check, settings, CheckState(check_id="wal"), datetime.now(UTC)))

    before = probe()
    assert not before.ok and "no pgBackRest backup yet (max age 26 h)" in before.detail
    done = cluster.pgbackrest("backup", "--type=full")
    assert done.returncode == 0, done.stderr
    after = probe()
    assert after.ok and re.search(r"; newest pgBackRest backup \d+ s old$", after.detail), after.detail


def test_an_unreachable_repository_is_a_note_not_an_alarm(cluster, monkeypatch):
    """pgBackRest's info against an S3 endpoint that refuses connections: retried for about four times the
    check's backup_info_timeout (not pgBackRest's default 60 s each), then the probe passes with a note."""
    for key, value in {**cluster.settings_env(), "CHARHUB_OPS_PITR_REPOSITORY": "s3://charhub-pitr/x"}.items():
        monkeypatch.setenv(key, value)
    cluster.config.write_text(
        f"[global]\nrepo1-type=s3\nrepo1-path=/x\nrepo1-s3-bucket=charhub-pitr\nrepo1-s3-endpoint=127.0.0.1\n"
        f"repo1-storage-port=1\nrepo1-s3-uri-style=path\nrepo1-s3-region=auto\nrepo1-s3-key=k\nrepo1-s3-key-secret=s3cret-value\n"
        f"log-level-console=off\nlog-level-stderr=warn\n\n[{cluster.stanza}]\npg1-path={cluster.datadir}\n")
    check = MonitorConfig.model_validate({"checks": [{"id": "wal", "type": "archive",
                                                      "backup_info_timeout": 0.5}]}).checks[0]
    settings = load_settings()
    result = run_check(check, context_for(check, settings, CheckState(check_id="wal"), datetime.now(UTC)))
    assert result.ok and "pgBackRest backups not checked (" in result.detail, result.detail
    assert "s3cret-value" not in result.detail


def test_segments_waiting_longer_than_max_archive_age_are_behind(cluster):
    """Real archive_status: the unarchived segment's .ready file, its name and age, the WAL written since."""
    _write_wal(cluster)
    _until(lambda: _archiver(cluster)["failed_count"] > 0, "failed archive_command")
    time.sleep(2.5)
    check = MonitorConfig.model_validate({"checks": [{"id": "wal", "type": "archive", "max_archive_age": 2,
                                                      "max_backup_age": None}]}).checks[0]
    result = run_check(check, CheckContext(now=datetime.now(UTC), database_url=cluster.url()))
    assert not result.ok
    assert re.search(r"no WAL archived in \d+ s while \d+\.\d MiB of WAL were written \(1 segment waiting, the "
                     r"oldest for \d+ s; max 2 s\)", result.detail), result.detail


def test_a_role_without_pg_monitor_reads_the_row_but_not_the_waiting_segments(cluster):
    with cluster.connect() as conn:
        conn.execute("CREATE ROLE watcher LOGIN")
        url = parse_pg_url(cluster.url().replace("postgres@", "watcher@"))
        with PsycopgSession(url) as session:
            plain = read_archiver(session)
        conn.execute("GRANT pg_monitor TO watcher")
        with PsycopgSession(url) as session:
            monitor = read_archiver(session)
    assert plain.ready is None and plain.oldest_ready_at is None and plain.archive_mode == "on"
    assert monitor.ready is not None and monitor.has_command


def test_the_container_path_reads_the_same_row(pg_other_settings):
    """psql inside the container (its values are text, its time zone Asia/Kathmandu) gives psycopg's row."""
    with DockerTools(parse_pg_url(INSIDE), pg_other_settings.name).session() as session:
        by_psql = read_archiver(session)
    with PsycopgSession(parse_pg_url(pg_other_settings.url())) as session:
        by_psycopg = read_archiver(session)
    assert by_psql.archive_mode == "off" and by_psql.ready is not None  # the superuser may list archive_status
    assert {**vars(by_psql), "now": None, "current_lsn": None} == {**vars(by_psycopg), "now": None,
                                                                   "current_lsn": None}
    check = MonitorConfig.model_validate({"checks": [{"id": "wal", "type": "archive", "max_backup_age": None,
                                                      "database_container": pg_other_settings.name}]}).checks[0]
    result = run_check(check, CheckContext(now=datetime.now(UTC), database_url=INSIDE))
    assert not result.ok and result.detail == "archive_mode is off: no WAL is archived"


@pytest.fixture
def pitr_container():
    from tests.harness.docker_pg import require_docker
    from tests.harness.pitr import start_pitr_container

    client = require_docker()
    c = start_pitr_container(client, f"charhub-ops-test-{new_id('archive')}", stanza="charhub")
    yield c
    c.remove()
    client.close()


def test_the_container_path_end_to_end(pitr_container, monkeypatch):
    """CharHub's layout: PostgreSQL in a container archiving through pgBackRest, the check querying through psql
    in it and reading pgBackRest's info there — failing before `pitr setup`, passing after setup and a backup."""
    from charhub_ops.pitr import ops

    for key, value in {**pitr_container.settings_env(), "CHARHUB_OPS_PITR_CIPHER_PASS": "drill-passphrase",
                       URL_ENV: INSIDE}.items():
        monkeypatch.setenv(key, value)
    check = MonitorConfig.model_validate({"checks": [{"id": "wal", "type": "archive", "database_url_env": URL_ENV,
                                                      "database_container": pitr_container.name}]}).checks[0]
    settings = load_settings()

    def probe():
        return run_check(check, context_for(check, settings, CheckState(check_id="wal"), datetime.now(UTC)))

    pitr_container.pg.psql("CREATE TABLE drill (id int); INSERT INTO drill VALUES (1); SELECT pg_switch_wal()")
    _until(lambda: "archiving is failing" in probe().detail, "failing archive_command seen in the container")
    failing = probe()
    assert not failing.ok and failing.detail.startswith("archiving is failing: last failure 0000000100000000000000")
    pitr = ops.connect(settings)
    ops.setup(pitr.pgb, pitr.config_text())
    ops.backup(pitr.pgb, "full")
    pitr_container.pg.psql("INSERT INTO drill VALUES (2); SELECT pg_switch_wal()")
    _until(lambda: probe().ok, "a passing probe after setup and a full backup")
    assert re.search(r"; newest pgBackRest backup \d+ s old$", probe().detail)
