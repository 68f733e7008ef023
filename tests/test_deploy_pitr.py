"""deploy/postgres-pitr: what CharHub changes to turn PITR on — the image, the compose override, the R2
configuration template — checked as files (parsed, never run here: no image can be pulled on the test machines).
The template has the same options as what `charhub-ops pitr setup` writes (charhub_ops.pitr.config)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import yaml
from pydantic import SecretStr

from charhub_ops.pitr.config import render_config
from charhub_ops.settings.pipelines import PitrSettings
from charhub_ops.settings.shared import StorageSettings

HERE = Path(__file__).resolve().parent.parent / "deploy" / "postgres-pitr"


def _ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",), delimiters=("=",))
    parser.optionxform = str  # keys as written
    parser.read_string(text)
    return parser


def test_dockerfile_adds_pgbackrest_to_postgres_16_and_bakes_no_secret():
    text = (HERE / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM postgres:16-alpine"  # CharHub's own image: same libc, same uid
    assert re.search(r"apk add --no-cache[^\n]*\bpgbackrest\b", text)
    assert "chown postgres:postgres /etc/pgbackrest" in text or "-o postgres -g postgres" in text
    assert not re.search(r"(?i)(cipher-pass|s3-key|secret|password)\s*=", text)


def test_compose_override_turns_archiving_on_with_the_config_volume():
    compose = yaml.safe_load((HERE / "compose.pitr.yaml").read_text())
    pg = compose["services"]["postgres"]
    assert pg["build"]["context"] and pg["image"]
    command = pg["command"]
    assert command[0] == "postgres"
    settings = dict(item.split("=", 1) for item in command[1:] if item != "-c")
    assert settings["wal_level"] == "replica" and settings["archive_mode"] == "on"
    assert settings["archive_timeout"] == "60"
    assert settings["archive_command"] == "pgbackrest --stanza=charhub archive-push %p"
    assert [c for c in command[1::2]] == ["-c"] * (len(command) // 2)  # every setting behind its -c
    assert any(v.split(":")[1] == "/etc/pgbackrest" for v in pg["volumes"])
    assert "pgbackrest_conf" in compose["volumes"]
    text = (HERE / "compose.pitr.yaml").read_text()
    assert not re.search(r"(?i)(cipher.pass|key.secret|secret_access_key|password)\s*[:=]\s*\S", text)


ISSUE_OPTIONS = {"repo1-type": "s3", "repo1-s3-region": "auto", "repo1-s3-uri-style": "path", "repo1-bundle": "y",
                 "repo1-block": "y", "compress-type": "zst", "repo1-cipher-type": "aes-256-cbc"}


def test_example_has_every_option_of_the_issue_and_only_placeholders():
    example = _ini((HERE / "pgbackrest.conf.example").read_text())
    options = dict(example["global"])
    for key, value in ISSUE_OPTIONS.items():
        assert options.get(key) == value, key
    assert options["beta"] == "y"  # repo1-block is a beta feature in pgBackRest 2.45
    for secret in ("repo1-cipher-pass", "repo1-s3-key", "repo1-s3-key-secret"):
        assert re.fullmatch(r"<[A-Z0-9_ ]+[^>]*>", options[secret]), secret  # a placeholder, never a value
    assert example.has_section("charhub")


def _rendered() -> configparser.ConfigParser:
    pitr = PitrSettings(repository="s3://charhub-pitr/prod", block_incremental=True)
    storage = StorageSettings(repository="s3://charhub-backups/prod",
                              r2_endpoint_url="https://ACCOUNT.r2.cloudflarestorage.com",
                              r2_access_key_id=SecretStr("key-id"), r2_secret_access_key=SecretStr("key-secret"))
    return _ini(render_config(pitr, storage, pg_port=5432, cipher_pass="passphrase", pg_user="charhub"))


def test_example_has_the_options_pitr_setup_writes():
    example, rendered = _ini((HERE / "pgbackrest.conf.example").read_text()), _rendered()
    assert set(example["global"]) == set(rendered["global"])
    assert set(example["charhub"]) == set(rendered["charhub"])
    same = ("repo1-type", "repo1-s3-region", "repo1-s3-uri-style", "repo1-bundle", "repo1-block", "beta",
            "compress-type", "repo1-cipher-type", "repo1-retention-full-type", "archive-async", "start-fast")
    assert {k: example["global"][k] for k in same} == {k: rendered["global"][k] for k in same}
    assert example["charhub"]["pg1-path"] == rendered["charhub"]["pg1-path"] == "/var/lib/postgresql/data"


def test_readme_names_the_steps():
    text = (HERE / "README.md").read_text()
    for step in ("docker compose", "compose.pitr.yaml", "charhub-ops pitr setup", "charhub-ops pitr backup",
                 "--type full", "bucket"):
        assert step in text, step
