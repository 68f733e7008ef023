"""What the pgBackRest flows, ``backups list`` and the capacity report make of ``info`` (pure, no I/O), and the
public API of those modules."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta

import pytest

from charhub_ops.pitr.info import BackupInfo, StanzaInfo
from charhub_ops.pitr.summary import (
    backup_notes,
    backup_payload,
    expired,
    physical_rows,
    repository_usage,
    stanza_repo_size,
)

T0 = datetime(2026, 12, 6, 1, 30, tzinfo=UTC)


def _backup(label: str, kind: str, day: int, repo_delta: int | None = 100, error: bool = False) -> BackupInfo:
    start = T0 + timedelta(days=day)
    return BackupInfo(label=label, type=kind, start=start, stop=start + timedelta(seconds=30), size=1000,
                      delta=400, repo_size=repo_delta, repo_delta=repo_delta, wal_start="0001", wal_stop="0002",
                      prior=None, error=error)


FULL = _backup("20261206-013000F", "full", 0, 300)
DIFF = _backup("20261206-013000F_20261207-013000D", "diff", 1, 50)
INCR = _backup("20261206-013000F_20261208-013000I", "incr", 2, 20)
STANZA = StanzaInfo(name="charhub", status_code=0, status_message="ok", cipher="aes-256-cbc",
                    backups=(FULL, DIFF, INCR), wal_min="0001", wal_max="0009")


@pytest.mark.parametrize(("asked", "made", "notes"), [("full", FULL, 0), ("diff", DIFF, 0), ("diff", FULL, 1),
                                                     ("incr", FULL, 1)])
def test_a_diff_or_incr_made_full_is_noted(asked, made, notes):
    assert len(backup_notes(asked, made)) == notes


@pytest.mark.parametrize(("backups", "total"), [((FULL, DIFF, INCR), 370), ((), None),
                                                ((FULL, _backup("x", "diff", 1, None)), None)])
def test_repository_size_is_the_sum_of_deltas_or_unknown(backups, total):
    stanza = StanzaInfo(name="s", status_code=0, status_message="ok", cipher="none", backups=backups)
    assert stanza_repo_size(stanza) == total


def test_expired_is_what_info_no_longer_lists_oldest_first():
    after = StanzaInfo(name="charhub", status_code=0, status_message="ok", cipher="none", backups=(INCR,))
    assert [b.label for b in expired(STANZA, after)] == [FULL.label, DIFF.label]
    assert expired(STANZA, STANZA) == []


def test_payload_and_rows_carry_the_figures_and_no_secret_fields():
    payload = backup_payload(DIFF, STANZA, "s3://pitr/charhub", "diff")
    assert payload["repository_size_bytes"] == 370 and payload["duration_seconds"] == 30
    assert payload["finished_at"].endswith("Z") and payload["backups"] == 3
    rows = physical_rows(STANZA, "s3://pitr/charhub")
    assert [r["backup_id"] for r in rows] == [INCR.label, DIFF.label, FULL.label]  # newest first
    assert {r["kind"] for r in rows} == {"physical"} and all(r["encrypted"] for r in rows)
    assert rows[-1]["size_bytes"] == 300 and rows[0]["database"] == "cluster:charhub"


def test_capacity_section_counts_by_type():
    usage = repository_usage(STANZA, "s3://pitr/charhub")
    assert usage["by_type"] == {"full": 1, "diff": 1, "incr": 1} and usage["backups"] == 3
    assert usage["repository_size_bytes"] == 370 and usage["newest"] == INCR.label


@pytest.mark.parametrize(("module", "names"), [
    ("charhub_ops.pitr.summary", {"KINDS", "backup_notes", "backup_payload", "backup_markdown", "expired",
                                  "expire_markdown", "physical_rows", "repository_usage", "stanza_repo_size",
                                  "resource_id"}),
    ("charhub_ops.pitr.catalog", {"stanza_info", "physical_backups", "pitr_usage"}),
])
def test_public_api_is_pinned(module, names):
    mod = importlib.import_module(module)
    assert set(mod.__all__) == names and all(hasattr(mod, n) for n in names)


def test_an_empty_passphrase_setting_falls_back_to_the_secret_block_as_the_cli_does(prefect_server, monkeypatch):
    """The flows read the passphrase as `charhub-ops pitr` does: an empty CHARHUB_OPS_PITR_CIPHER_PASS is unset."""
    import uuid

    from prefect.blocks.system import Secret

    from charhub_ops.settings import load_group
    from tasks.pitr import cipher_pass

    block = f"pitr-{uuid.uuid4().hex[:8]}"
    Secret(value="from-the-block").save(block)
    monkeypatch.setenv("CHARHUB_OPS_PITR_CIPHER_BLOCK", block)
    monkeypatch.setenv("CHARHUB_OPS_PITR_CIPHER_PASS", "")
    assert cipher_pass(load_group("pitr")).get_secret_value() == "from-the-block"
    monkeypatch.setenv("CHARHUB_OPS_PITR_CIPHER_PASS", "from-the-setting")
    assert cipher_pass(load_group("pitr")).get_secret_value() == "from-the-setting"
