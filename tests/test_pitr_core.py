"""`charhub-ops pitr setup|backup|info|expire` against a real PostgreSQL cluster archiving through the real
pgBackRest 2.45 (tests/harness/pitr.py), run as operators run it: a process, its exit code and its output."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.harness.pitr import pgbackrest_available, start_archiving_cluster
from tests.harness.services import free_port

EXE = str(Path(sys.executable).with_name("charhub-ops"))
MARK = "k4x9m2p7"  # only in secrets: a truncated copy is found too
PASS, WRONG = f"pass-{MARK}-right", f"pass-{MARK}-wrong"
KEY, SECRET = f"AKIA{MARK.upper()}", f"sk-{MARK}/+secret"

pytestmark = pytest.mark.skipif(not pgbackrest_available(), reason="pgbackrest is not installed (apt-get install "
                                                                   "pgbackrest; .ci/run installs it)")


@pytest.fixture
def cluster():
    c = start_archiving_cluster(f"core{uuid.uuid4().hex[:6]}")
    yield c
    c.remove()


def pitr(cluster, *args: str, timeout: int = 180, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("CHARHUB_OPS_", "R2_", "AWS_", "PREFECT_API")) and k != "DATABASE_URL"}
    full = {**base, **cluster.settings_env(), "CHARHUB_OPS_PITR_CIPHER_PASS": PASS, "COLUMNS": "200", **env}
    proc = subprocess.run([EXE, "pitr", *args], capture_output=True, text=True, env=full, timeout=timeout)
    for secret in (PASS, WRONG, KEY, SECRET, MARK):
        assert secret not in proc.stdout + proc.stderr, (args, "leaked a secret")
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


def ok_json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def one_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_setup_twice_then_a_full_diff_incr_chain_and_expire(cluster):
    first = ok_json(pitr(cluster, "setup", "--json"))
    assert (first["created"], first["checked"], first["stanza"]) == (True, True, cluster.stanza)
    conf = os.stat(cluster.config)
    assert stat.S_IMODE(conf.st_mode) == 0o640 and conf.st_uid == pwd.getpwnam("postgres").pw_uid
    again = pitr(cluster, "setup")
    assert again.returncode == 0 and "already present" in again.stderr and "check passed" in again.stderr

    made = [ok_json(pitr(cluster, "backup", "--type", kind, "--json")) for kind in ("full", "diff", "incr")]
    assert [m["type"] for m in made] == ["full", "diff", "incr"]
    info = ok_json(pitr(cluster, "info", "--json"))
    assert [b["label"] for b in info["backups"]] == [m["label"] for m in made]
    assert info["backups"][1]["prior"] == made[0]["label"] and info["backups"][2]["prior"] == made[1]["label"]
    assert info["status_code"] == 0 and info["cipher"] == "aes-256-cbc"
    assert info["wal_min"] <= made[0]["wal_start"] and info["wal_max"] >= made[2]["wal_stop"]
    table = pitr(cluster, "info")
    assert table.returncode == 0 and all(m["label"] in table.stdout for m in made)
    assert "WAL archived" in table.stderr

    second = ok_json(pitr(cluster, "backup", "--json"))  # a second full: keep_weekly=1 drops the first chain
    plan = ok_json(pitr(cluster, "expire", "--dry-run", "--json", CHARHUB_OPS_PITR_KEEP_WEEKLY="1"))
    assert plan["dry_run"] and plan["retention"]["repo1-retention-full"] == "1"
    assert set(plan["expired"]) == {m["label"] for m in made} and plan["archive_ranges"]
    assert [b["label"] for b in ok_json(pitr(cluster, "info", "--json"))["backups"]] == [
        *(m["label"] for m in made), second["label"]]  # the dry run removed nothing
    printed = pitr(cluster, "expire", CHARHUB_OPS_PITR_KEEP_WEEKLY="1")
    assert printed.returncode == 0 and "keep_weekly=1 → repo1-retention-full=1" in printed.stderr
    assert [b["label"] for b in ok_json(pitr(cluster, "info", "--json"))["backups"]] == [second["label"]]


def test_before_setup_every_command_names_the_fix(cluster):
    for args in (("info",), ("backup",), ("expire", "--dry-run")):
        one_error(pitr(cluster, *args), f"no configuration at {cluster.config} (pitr_config_path)",
                  "run `charhub-ops pitr setup`")
    # the configuration exists (say, written by hand) but not the stanza
    cluster.config.write_text(f"[global]\nrepo1-path={cluster.repo}\nrepo1-retention-full=1\n"
                              f"log-level-console=off\nlog-level-stderr=warn\nlog-level-file=off\n"
                              f"[{cluster.stanza}]\npg1-path={cluster.datadir}\npg1-port={cluster.port}\n"
                              f"pg1-socket-path={cluster.socket_dir}\n")
    for args in (("info",), ("backup", "--type", "diff"), ("expire",)):
        one_error(pitr(cluster, *args), f"(stanza {cluster.stanza}): the stanza does not exist in the repository",
                  "run `charhub-ops pitr setup`")


def test_bad_input_is_one_line(cluster):
    one_error(pitr(cluster, "backup", "--type", "weekly"), "--type: 'weekly' is not one of full, diff, incr")
    one_error(pitr(cluster, "setup", CHARHUB_OPS_PITR_CIPHER_PASS=""), "pitr_cipher_pass: not set")
    one_error(pitr(cluster, "setup", CHARHUB_OPS_PITR_REPOSITORY=""), "pitr_repository: not set")
    one_error(pitr(cluster, "setup", CHARHUB_OPS_REPOSITORY=f"file://{cluster.repo}/logical"),
              "pitr_repository: overlaps the logical backups' repository")
    one_error(pitr(cluster, "info", CHARHUB_OPS_PITR_PG_PATH="/nonexistent/data"), "pitr_pg_path: '/nonexistent")
    assert not cluster.config.exists()  # nothing written by a refused setup


def test_wrong_passphrase_is_one_line_and_the_right_one_repairs(cluster):
    ok_json(pitr(cluster, "setup", "--json"))
    ok_json(pitr(cluster, "backup", "--json"))
    working = cluster.config.read_text()
    one_error(pitr(cluster, "setup", CHARHUB_OPS_PITR_CIPHER_PASS=WRONG), "cannot decrypt the repository",
              "wrong passphrase (pitr_cipher_pass")
    assert cluster.config.read_text() == working, "the refused configuration went live"  # archive_command works
    assert sorted(p.name for p in cluster.base.iterdir() if "pgbackrest.conf" in p.name) == ["pgbackrest.conf"]
    cluster.config.write_text(working.replace(PASS, WRONG))  # a wrong passphrase in the live configuration
    for args in (("info",), ("backup",)):
        one_error(pitr(cluster, *args), "cannot decrypt the repository", "wrong passphrase (pitr_cipher_pass")
    assert len(ok_json(pitr(cluster, "setup", "--json")) and ok_json(pitr(cluster, "info", "--json"))["backups"]) == 1


def test_unreachable_repository_is_one_line_without_the_keys(cluster):
    closed = free_port()
    env = {"CHARHUB_OPS_PITR_REPOSITORY": "s3://pitr-bucket/pg", "R2_ENDPOINT_URL": f"https://127.0.0.1:{closed}",
           "R2_ACCESS_KEY_ID": KEY, "R2_SECRET_ACCESS_KEY": SECRET,
           "CHARHUB_OPS_PITR_IO_TIMEOUT": "2"}  # pgBackRest retries each of info's 4 files for io-timeout
    line = one_error(pitr(cluster, "setup", **env), "repository unreachable", f"127.0.0.1:{closed}",
                     "Connection refused", "(pitr_repository, r2_endpoint_url)")
    assert line.startswith("error: pgbackrest info: ")


def test_setup_reads_the_passphrase_from_the_secret_block(prefect_server, cluster):
    from prefect.blocks.system import Secret

    block = f"pitr-cipher-{uuid.uuid4().hex[:8]}"
    Secret(value=PASS).save(block)
    env = {"PREFECT_API_URL": prefect_server, "CHARHUB_OPS_PITR_CIPHER_PASS": "",
           "CHARHUB_OPS_PITR_CIPHER_BLOCK": block}
    assert ok_json(pitr(cluster, "setup", "--json", **env))["created"] is True
    assert f"repo1-cipher-pass={PASS}\n" in cluster.config.read_text()
    one_error(pitr(cluster, "setup", **{**env, "CHARHUB_OPS_PITR_CIPHER_BLOCK": "pitr-no-such-block"}),
              "pitr_cipher_pass: not set", "Secret block pitr-no-such-block")


def test_a_lock_held_by_another_pgbackrest_is_one_line(cluster):
    import fcntl

    ok_json(pitr(cluster, "setup", "--json"))
    lock_dir = Path("/tmp/pgbackrest")  # pgBackRest's default lock-path
    lock_dir.mkdir(exist_ok=True)
    pw = pwd.getpwnam("postgres")
    os.chown(lock_dir, pw.pw_uid, pw.pw_gid)
    lock = lock_dir / f"{cluster.stanza}-backup.lock"
    with open(lock, "a") as held:  # what a running `pgbackrest backup` holds
        os.chown(lock, pw.pw_uid, pw.pw_gid)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        one_error(pitr(cluster, "backup"), f"pgbackrest backup (stanza {cluster.stanza}): another pgBackRest "
                                           f"command holds this stanza's lock")
    lock.unlink()
    assert ok_json(pitr(cluster, "backup", "--json"))["type"] == "full"
