"""pgBackRest 2.45's ``info --output=json``, as captured here (tests/pitr_json/), parsed and classified."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from charhub_ops.errors import DatabaseError
from charhub_ops.pitr.command import PgBackRestError, read_info
from charhub_ops.pitr.info import parse_info

JSON = Path(__file__).parent / "pitr_json"


def text(name: str) -> str:
    return (JSON / f"{name}.json").read_text()


def test_a_full_diff_incr_chain():
    [stanza] = parse_info(text("chain"))
    assert (stanza.name, stanza.status_code, stanza.cipher, stanza.exists) == ("capture", 0, "aes-256-cbc", True)
    assert [b.type for b in stanza.backups] == ["full", "diff", "incr"]
    full, diff, incr = stanza.backups
    assert full.label.endswith("F") and full.prior is None
    assert diff.label.startswith(full.label + "_") and diff.label.endswith("D") and diff.prior == full.label
    assert incr.label.endswith("I") and incr.prior == diff.label
    assert full.start == datetime(2026, 12, 5, 1, 36, 47, tzinfo=UTC) and full.seconds >= 0
    assert (full.size, full.delta, full.repo_size) == (22992374, 22992374, 2828256)
    assert diff.delta < full.delta and diff.repo_delta == 464
    assert (full.wal_start, full.wal_stop) == ("000000010000000000000002", "000000010000000000000003")
    assert (stanza.wal_min, stanza.wal_max) == ("000000010000000000000001", "000000010000000000000007")
    assert stanza.newest == incr and stanza.newest_of("full") == full and stanza.newest_of("diff") == diff
    assert not stanza.backup_running


@pytest.mark.parametrize(("name", "code", "exists", "message"), [
    ("missing_stanza", 1, False, "missing stanza path"),
    ("no_backup", 2, True, "no valid backups"),
])
def test_statuses_that_are_answers(name, code, exists, message):
    stanza = read_info(text(name), "capture")
    assert (stanza.status_code, stanza.exists, stanza.status_message) == (code, exists, message)
    assert stanza.backups == () and stanza.newest is None


@pytest.mark.parametrize(("name", "stanza", "kind", "needles", "transient"), [
    ("wrong_passphrase", "capture", "passphrase", ["wrong passphrase (pitr_cipher_pass"], False),
    ("unreachable_s3", "probe", "unreachable", ["repository unreachable", "127.0.0.1:1", "Connection refused",
                                                "(pitr_repository, r2_endpoint_url)"], True),
])
def test_info_exits_0_on_a_repository_it_cannot_read_but_we_raise_one_line(name, stanza, kind, needles, transient):
    with pytest.raises(PgBackRestError) as caught:
        read_info(text(name), stanza)
    message = str(caught.value)
    assert caught.value.kind == kind and caught.value.transient is transient
    assert message.startswith("pgbackrest info: ") and "\n" not in message
    for needle in needles:
        assert needle in message


def test_a_different_cipher_is_a_passphrase_problem():
    raw = text("no_backup").replace('"code":2,"lock"', '"code":4,"lock"')
    with pytest.raises(PgBackRestError) as caught:
        read_info(raw, "capture")
    assert caught.value.kind == "passphrase"


@pytest.mark.parametrize("bad", ["", "ERROR: [055]: x", "{}", '[{"name": "x"}]', "[1]"])
def test_unexpected_output_is_one_permanent_error(bad):
    with pytest.raises(DatabaseError, match="^pgbackrest") as caught:
        read_info(bad, "x")
    assert not caught.value.transient


def test_another_stanza_only():
    with pytest.raises(DatabaseError, match="no answer for stanza other"):
        read_info(text("chain"), "other")
