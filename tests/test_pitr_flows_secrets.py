"""Secrets scan of the pgBackRest flows (issue 19): the repository passphrase lives in the Prefect Secret block
``pitr_cipher_block`` (``CHARHUB_OPS_PITR_CIPHER_PASS`` unset), setup reads it from there; then a full backup,
a differential, expire, the restore drill, a dry-run restore, a backup the repository refuses and a setup with a
wrong passphrase (plus the backup that then fails on it) run against a real archiving cluster. Everything they
left is searched for both passphrases the way tests/test_secrets_scan.py searches (as is, encoded, base64):
the Prefect database and home (raw bytes), the API's artifacts, logs, runs, events and block documents, this
process's log records, the error texts and every file of pgBackRest's repository. pgBackRest's own
configuration file holds the passphrase by design (0640, the cluster's owner) and is the one place not searched.
"""

from __future__ import annotations

import logging
import uuid

import pytest

from tests.harness.pitr import start_archiving_cluster
from tests.test_secrets_scan import (
    _api_pages,
    _flush_to_server,
    _prefect_files,
    _Records,
    error_text,
    find,
    needles,
)

PX_MARK = "px5v8n1w3k"  # in no name, key or id the scenario makes: only in secrets
PASSPHRASE = f"Cipher-{PX_MARK}-pass/+="
WRONG = f"Wrong-{PX_MARK}-cipher"


def _runs(cluster, texts: dict[str, str]) -> None:
    from charhub_ops.settings import load_settings
    from flows.pitr import pitr_backup_flow, pitr_expire_flow
    from flows.pitr_restore import pitr_restore_flow, pitr_verify_flow
    from tasks.pitr import pitr_setup, resolve_pitr_config

    pitr_setup.fn(resolve_pitr_config.fn(load_settings(), None))
    assert pitr_backup_flow(kind="full")["type"] == "full"
    assert pitr_backup_flow(kind="diff")["type"] == "diff"
    pitr_expire_flow()
    assert pitr_verify_flow()["ok"]
    assert pitr_restore_flow(target={"into": str(cluster.base / "never")})["dry_run"]
    backups = cluster.repo / "backup" / cluster.stanza
    backups.chmod(0o555)
    try:
        texts["refused backup"] = error_text(pitr_backup_flow(kind="incr", return_state=True).result(
            raise_on_failure=False))
    finally:
        backups.chmod(0o750)


def _wrong_passphrase(cluster, texts: dict[str, str], monkeypatch) -> None:
    """Setup with a wrong passphrase fails (and keeps the working configuration); a configuration written with
    it (by hand, here) makes the backup flow fail on it."""
    from charhub_ops.errors import DatabaseError
    from charhub_ops.pitr.ops import connect
    from charhub_ops.settings import load_settings
    from flows.pitr import pitr_backup_flow
    from tasks.pitr import pitr_setup, resolve_pitr_config

    monkeypatch.setenv("CHARHUB_OPS_PITR_CIPHER_PASS", WRONG)
    with pytest.raises(DatabaseError) as info:
        pitr_setup.fn(resolve_pitr_config.fn(load_settings(), None))
    texts["wrong passphrase (setup)"] = error_text(info.value)
    assert "passphrase" in texts["wrong passphrase (setup)"]
    assert pitr_backup_flow(kind="incr")["type"] == "incr"  # the working configuration was kept
    wrong = connect(load_settings(), WRONG)
    wrong.pgb.install_config(wrong.config_text())
    state = pitr_backup_flow(return_state=True)
    assert state.is_failed()
    texts["wrong passphrase (backup)"] = error_text(state.result(raise_on_failure=False))
    assert "passphrase" in texts["wrong passphrase (backup)"]


def test_pitr_flows_leave_no_passphrase(prefect_server, monkeypatch):
    import prefect.main  # noqa: F401 - Prefect configures logging (replacing root handlers) before ours is added
    from prefect.blocks.system import Secret

    cluster = start_archiving_cluster(f"scan{uuid.uuid4().hex[:6]}")
    block = f"scan-pitr-cipher-{uuid.uuid4().hex[:6]}"
    Secret(value=PASSPHRASE).save(block, overwrite=True)
    for name, value in cluster.settings_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CHARHUB_OPS_PITR_CIPHER_PASS", raising=False)
    monkeypatch.setenv("CHARHUB_OPS_PITR_CIPHER_BLOCK", block)
    monkeypatch.setenv("CHARHUB_OPS_WORK_DIR", str(cluster.base))
    monkeypatch.setenv("CHARHUB_OPS_TASK_RETRIES", "0")
    records, texts = _Records(), {}
    logging.getLogger().addHandler(records)
    try:
        _runs(cluster, texts)
        _wrong_passphrase(cluster, texts, monkeypatch)
        _flush_to_server(prefect_server)
        texts["log records"] = "\n".join(records.lines)
        secrets = {**needles({"passphrase": PASSPHRASE, "wrong passphrase": WRONG}), PX_MARK.encode(): "marker"}
        assert find(cluster.config.read_bytes(), "pgbackrest.conf", secrets)  # the search sees it where it belongs
        hits = [hit for where, text in texts.items() for hit in find(text, where, secrets)]
        files = [p for p in cluster.repo.rglob("*") if p.is_file()]
        assert any(p.name == "backup.info" for p in files)
        hits += [hit for p in files for hit in find(p.read_bytes(), str(p), secrets)]
        for path in ("artifacts", "logs", "flow_runs", "task_runs", "events", "block_documents"):
            hits += [hit for page in _api_pages(prefect_server, path) for hit in find(page, f"API {path}", secrets)]
        hits += [hit for path in _prefect_files() for hit in find(path.read_bytes(), str(path), secrets)]
        assert "pitr-backup-report" in "".join(_api_pages(prefect_server, "artifacts"))  # the scan read the reports
        assert hits == []
    finally:
        logging.getLogger().removeHandler(records)
        cluster.remove()
