"""Settings grouped by pipeline, names unchanged: every documented variable still reaches its field, the
generated docs/configuration.md is current, errors name the setting and its variable, and a flow run reads
its settings once (tasks, retry decisions and hooks reuse them)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from charhub_ops.errors import ConfigError
from charhub_ops.settings import GROUPS, load_settings
from charhub_ops.settings.reference import configuration_markdown

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIG_DOC = ROOT / "docs" / "configuration.md"
ENV_NAME = re.compile(r"`((?:CHARHUB_OPS_|R2_)[A-Z0-9_]+|DATABASE_URL)`")
# variable → (group attribute, field), from the groups themselves
WHERE = {name: (attr, field) for attr, cls in GROUPS.items() for field in cls.model_fields
         for name in cls.env_names(field)}
CANDIDATES = ["7", "9", "1", "120", "0.5", "true", "false", "s3://bucket/prefix", "https://s3.example:9000",
              "stream", "quarantine", "blocks", "first-block,second", "3d", "a"]


def _documented(text: str) -> set[str]:
    """Every variable named in a table row of ``text`` (the README's short table, the generated page)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            names |= set(ENV_NAME.findall(line.split("|")[1]))
    return names


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No variable of ours set and no .env in the working directory."""
    for name in WHERE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _plain(value):
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


@pytest.mark.parametrize("name", sorted(_documented(README) | _documented(CONFIG_DOC.read_text())))
def test_every_documented_variable_reaches_its_field(clean_env, name):
    assert name in WHERE, f"{name} is documented but no setting reads it"
    attr, field = WHERE[name]
    default = _plain(getattr(load_settings(), attr).__getattribute__(field))
    for candidate in CANDIDATES:
        clean_env.setenv(name, candidate)
        try:
            value = _plain(getattr(GROUPS[attr](), field))
        except ValidationError:
            continue
        if value != default:
            assert value == _plain(getattr(getattr(load_settings(), attr), field))
            return
    pytest.fail(f"{name}: no value changed {attr}.{field}")


def test_the_readme_table_points_at_the_full_reference():
    assert _documented(README) and "docs/configuration.md" in README


def test_every_setting_is_in_the_generated_reference():
    documented = _documented(CONFIG_DOC.read_text())
    for cls in GROUPS.values():
        for field in cls.model_fields:
            assert cls.env_names(field)[0] in documented, (cls.__name__, field)
            assert cls.model_fields[field].description, f"{cls.__name__}.{field} has no description"


def test_the_generated_reference_is_current():
    assert CONFIG_DOC.read_text() == configuration_markdown(GROUPS), \
        "docs/configuration.md is stale: run `uv run python scripts/gen_config_docs.py`"


@pytest.mark.parametrize(("env", "setting"), [
    ({"CHARHUB_OPS_CLEANUP_LOCK_TIMEOUT": "soon"}, "cleanup_lock_timeout (CHARHUB_OPS_CLEANUP_LOCK_TIMEOUT)"),
    ({"CHARHUB_OPS_MIGRATE_LOCK_RETRIES": "0"}, "migrate_lock_retries (CHARHUB_OPS_MIGRATE_LOCK_RETRIES)"),
    ({"CHARHUB_OPS_DEPLOY_GATE_PASSES": "x"}, "deploy_gate_passes (CHARHUB_OPS_DEPLOY_GATE_PASSES)"),
    ({"CHARHUB_OPS_ZSTD_LEVEL": "99"}, "zstd_level (CHARHUB_OPS_ZSTD_LEVEL)"),
    ({"R2_ENDPOINT_URL": "ftp://x"}, "r2_endpoint_url (CHARHUB_OPS_R2_ENDPOINT_URL)"),
])
def test_a_bad_value_names_the_setting_and_its_variable(clean_env, env, setting):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert setting in str(info.value)


def test_every_bad_setting_is_named_at_once_and_no_secret_is_echoed(clean_env):
    clean_env.setenv("DATABASE_URL", "postgresql://u:Hunter2-secret@h/db")
    clean_env.setenv("CHARHUB_OPS_CLEANUP_MEDIA_MODE", "shred")
    clean_env.setenv("CHARHUB_OPS_KEEP_DAILY", "-5")
    with pytest.raises(ConfigError) as info:
        load_settings(repository="ftp://nope")
    text = str(info.value)
    assert all(s in text for s in ("cleanup_media_mode", "keep_daily", "repository")) and "Hunter2" not in text


def test_overrides_go_to_their_group_and_an_unknown_one_is_a_programming_error(clean_env):
    settings = load_settings(repository="s3://b/p", cleanup_policy_file="p.yaml", migrate_lock_wait=3,
                             docker_container=None)
    assert (settings.storage.repository, settings.cleanup.policy_file, settings.migrate.lock_wait,
            settings.database.docker_container) == ("s3://b/p", "p.yaml", 3, None)
    with pytest.raises(TypeError, match="cleanup_lock_timeouts"):
        load_settings(cleanup_lock_timeouts=1)


def test_both_names_of_charhub_variables_are_accepted(clean_env):
    clean_env.setenv("DATABASE_URL", "postgresql://a@h/one")
    assert load_settings().database.database_url.get_secret_value().endswith("/one")
    clean_env.setenv("CHARHUB_OPS_DATABASE_URL", "postgresql://a@h/two")
    assert load_settings().database.database_url.get_secret_value().endswith("/two")


def test_groups_turn_themselves_into_options(clean_env):
    clean_env.setenv("CHARHUB_OPS_CLEANUP_MIN_BATCH", "250")
    clean_env.setenv("CHARHUB_OPS_MIGRATE_LOCK_TIMEOUT", "2.5")
    clean_env.setenv("R2_ACCOUNT_ID", "acct")
    settings = load_settings()
    assert settings.cleanup.row_options().floor == 250
    assert settings.cleanup.orphan_options("delete").mode == "delete"
    assert (settings.migrate.runner_options(7).lock_wait, settings.migrate.runner_options().lock_timeout) == (7, 2.5)
    assert settings.storage.s3_options().endpoint_url == "https://acct.r2.cloudflarestorage.com"
    assert settings.retention.policy(keep_last=1).source == "options"


def test_no_task_module_reads_the_settings_itself():
    """Settings are read once per flow run (tasks.common.run_settings) and passed down."""
    offenders = []
    for path in sorted((ROOT / "tasks").glob("*.py")):
        if path.name == "common.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name | ast.Attribute) and getattr(node, "id", getattr(node, "attr", "")) \
                    in ("load_settings", "load_group"):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_a_flow_run_reads_its_settings_once(prefect_server, clean_env):
    """The flow's read (with its parameters) is what its tasks, retry decisions and hooks see, even when
    the environment changes during the run."""
    from prefect import flow, task
    from prefect.cache_policies import NONE

    import tasks.common as common

    reads = []
    real = common.load_settings
    clean_env.setattr(common, "load_settings", lambda **kw: reads.append(kw) or real(**kw))

    @task(cache_policy=NONE, **common.RETRY)
    def inside() -> tuple[str, int]:
        clean_env.setenv("CHARHUB_OPS_TASK_RETRIES", "0")
        return common.run_settings().storage.repository, common.setting("task_retries", -1)

    @flow
    def reads_once() -> tuple[str, int]:
        common.run_settings(repository="file:///srv/flow-parameter")
        return inside()

    clean_env.setenv("CHARHUB_OPS_TASK_RETRIES", "3")
    assert reads_once() == ("file:///srv/flow-parameter", 3)
    assert len(reads) == 1
