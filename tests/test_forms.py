"""The forms the Prefect UI renders from the flows' parameter schemas (issue 11, deliverable 3).

Asserted on ``parameter_schema(flow.fn)`` — what a deployment registers and the UI draws: titled groups,
patterns and bounds the server enforces, order by importance, block names instead of secrets, and no
parameter that skips a safety check. Plus: every ``parameters:`` of prefect.yaml validates against it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prefect.exceptions import ParameterTypeError
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from charhub_ops.errors import ConfigError
from flows.params import (
    ACCEPT_PATTERN,
    BACKUP_ID_PATTERN,
    BLOCK_NAME_PATTERN,
    CHECK_ID_PATTERN,
    CONTAINER_PATTERN,
    DURATION_PATTERN,
    REPOSITORY_PATTERN,
    STATE_PATTERN,
    Repository,
    RestoreSource,
    build,
    check_value,
)

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text())
ENTRYPOINTS = sorted({d["entrypoint"] for d in SPEC["deployments"]} | {"flows/swap.py:swap_flow"})
SECRETISH = {"password", "passwd", "url", "dsn", "identity", "key", "token", "secret", "credentials"}
PATH_PARAMETERS = {"identity_file"}  # a path on the worker, never the identity's text


def _flow(entrypoint: str):
    return load_flow_from_entrypoint(str(ROOT / entrypoint))


def _schema(entrypoint: str) -> dict:
    return parameter_schema(_flow(entrypoint).fn).model_dump()


def _fields(schema: dict):
    """(name, property schema, owner) of every top-level and nested field."""
    for name, prop in schema["properties"].items():
        yield name, prop, "flow"
    for model, definition in schema.get("definitions", {}).items():
        for name, prop in definition.get("properties", {}).items():
            yield name, prop, model


def _string_schema(prop: dict) -> dict:
    return next((p for p in prop.get("anyOf", [prop]) if p.get("type") == "string"), {})


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_no_form_field_skips_the_approval_or_takes_a_secret(entrypoint):
    schema = _schema(entrypoint)
    assert "approved" not in json.dumps(schema)
    for name, prop, owner in _fields(schema):
        if not SECRETISH & set(name.lower().split("_")) or name in PATH_PARAMETERS:
            continue
        assert name.endswith(("_secret", "_block")), f"{owner}.{name}: a secret value in a form"
        assert _string_schema(prop).get("pattern") == BLOCK_NAME_PATTERN, f"{owner}.{name}: not a block name"


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_every_group_has_a_title_and_every_field_a_description(entrypoint):
    schema = _schema(entrypoint)
    for name, prop in schema["properties"].items():
        assert prop.get("description"), f"{entrypoint}: {name} has no description"
    for model, definition in schema.get("definitions", {}).items():
        assert definition.get("title") and definition["title"] != model, f"{model}: no title of its own"
        for name, prop in definition["properties"].items():
            assert prop.get("title") and prop.get("description"), f"{model}.{name}"


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_patterns_on_repositories_containers_and_backup_ids(entrypoint):
    expected = {"repository": REPOSITORY_PATTERN, "docker_container": CONTAINER_PATTERN,
                "backup": BACKUP_ID_PATTERN, "database_url_secret": BLOCK_NAME_PATTERN}
    for name, prop, owner in _fields(_schema(entrypoint)):
        if name in expected:
            assert _string_schema(prop).get("pattern") == expected[name], f"{owner}.{name}"


def test_restore_form_groups_in_order_of_importance():
    schema = _schema("flows/restore.py:restore_flow")
    order = sorted(schema["properties"], key=lambda n: schema["properties"][n]["position"])
    assert order == ["repository", "source", "target", "access", "decryption"]
    defs = schema["definitions"]
    assert list(defs["RestoreSource"]["properties"]) == ["backup", "before", "source_database"]
    assert list(defs["RestoreTarget"]["properties"]) == ["target_database", "replace", "with_globals", "no_owner"]
    assert list(defs["Access"]["properties"]) == ["database_url_secret", "docker_container"]
    assert {defs[m]["title"] for m in defs} == {"Which backup", "Restore into", "Database server",
                                                "Decryption (encrypted backups)"}
    assert defs["RestoreTarget"]["properties"]["replace"]["default"] is False


def test_backup_form():
    schema = _schema("flows/backup.py:backup_flow")
    order = sorted(schema["properties"], key=lambda n: schema["properties"][n]["position"])
    assert order == ["repository", "all_databases", "access", "encrypt_to"]
    recipients = _string_schema(schema["properties"]["encrypt_to"]["anyOf"][0]["items"])
    assert recipients["pattern"].startswith("^age1")


@pytest.mark.parametrize("entrypoint", ["flows/backup.py:backup_flow", "flows/restore.py:restore_flow",
                                        "flows/verify.py:verify_flow"])
def test_no_parameters_means_the_defaults_of_before(entrypoint):
    """A run with no parameters: every group at its defaults (all None/False/'latest'), as the flat
    parameters were."""
    flow = _flow(entrypoint)
    validated = flow.validate_parameters({})
    for value in validated.values():
        if hasattr(value, "model_dump"):
            assert all(v in (None, False, "latest") for v in value.model_dump().values())


@pytest.mark.parametrize(("parameters", "field"), [
    ({"source": {"backup": "yesterday"}}, "backup"),
    ({"repository": "s3://AKIA:secret@bucket/x"}, "repository"),
    ({"repository": "http://example.com/x"}, "repository"),
    ({"access": {"database_url_secret": "postgresql://u:p@h/db"}}, "database_url_secret"),
    ({"access": {"docker_container": "-rm"}}, "docker_container"),
    ({"target": {"approved": True}}, "approved"),
])
def test_the_server_refuses_values_outside_the_form(parameters, field):
    flow = _flow("flows/restore.py:restore_flow")
    with pytest.raises(ParameterTypeError, match=field):
        flow.validate_parameters(parameters)


def test_a_dict_is_accepted_for_a_group():
    flow = _flow("flows/restore.py:restore_flow")
    validated = flow.validate_parameters({"source": {"backup": "20261126T023000Z-3f9a"}, "target": {"replace": True}})
    assert validated["source"] == RestoreSource(backup="20261126T023000Z-3f9a") and validated["target"].replace


def test_cli_input_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"Which backup: backup: String should match pattern"):
        build(RestoreSource, backup="yesterday")
    with pytest.raises(ConfigError, match=r"--from: String should match pattern"):
        check_value("--from", Repository | None, "ftp://host/x")


def _sample(value):
    """A trigger's template rendered with a plausible event value."""
    if isinstance(value, dict):
        return {k: _sample(v) for k, v in value.items()}
    if isinstance(value, str) and "{{" in value:
        samples = {"backup_id": "20261126T023000Z-3f9a", "database": "charhub_db", "repository": "s3://backups/pg",
                   "check_id": "db", "services": ["charhub-backend-1"], "detail": "404"}
        return samples[re.search(r"event\.payload\.(\w+)", value).group(1)]
    return value


def _field_infos(value, where: str = "") -> list[str]:
    """Where a validated parameter set still holds a pydantic ``FieldInfo`` (instead of its default)."""
    if isinstance(value, FieldInfo):
        return [where]
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _field_infos(v, f"{where}.{k}".lstrip("."))]
    if isinstance(value, BaseModel):
        return [hit for k in type(value).model_fields for hit in _field_infos(getattr(value, k), f"{where}.{k}")]
    return []


@pytest.mark.parametrize("deployment", SPEC["deployments"], ids=lambda d: d["name"])
def test_prefect_yaml_parameters_fit_the_forms(deployment):
    """The deployment's parameters and each trigger's (templates rendered, merged over them as the
    server does) validate against the flow's schema — and what the flow then receives holds plain defaults for
    every parameter left out. A parameter written ``x: T = Field(None, …)`` received the ``FieldInfo`` object
    itself in a schedule's or a trigger's run (every deployment but rollback failed this before)."""
    flow = _flow(deployment["entrypoint"])
    base = deployment.get("parameters") or {}
    required = parameter_schema(flow.fn).required or []  # asked in the form of a manual run (check_id)
    asked = {name: ["charhub-backend-1"] if name == "services" else "db" for name in required}
    for given in ({**asked, **base}, asked):
        assert not _field_infos(flow.validate_parameters(given)), deployment["name"]
    for trigger in deployment.get("triggers", []):
        received = flow.validate_parameters({**base, **_sample(trigger.get("parameters") or {})})
        assert not _field_infos(received), deployment["name"]


def test_prune_form_policy_has_bounds_and_the_duration_pattern():
    from charhub_ops.retention.options import SETTINGS_FIELDS

    schema = _schema("flows/prune.py:prune_flow")
    assert [n for n in sorted(schema["properties"], key=lambda n: schema["properties"][n]["position"])] == [
        "repository", "dry_run", "database", "policy"]
    policy = schema["definitions"]["Retention"]["properties"]
    assert set(policy) == set(SETTINGS_FIELDS)  # every rule of the settings, no other
    assert list(policy)[:3] == ["keep_daily", "keep_weekly", "keep_monthly"] and list(policy)[-1] == "min_keep"
    for name in set(policy) - {"keep_within", "min_keep"}:
        count = policy[name]["anyOf"][0]
        assert (count["type"], count["minimum"], count["maximum"]) == ("integer", -1, 100_000), name
    assert policy["min_keep"]["anyOf"][0]["minimum"] == 0
    assert _string_schema(policy["keep_within"])["pattern"] == DURATION_PATTERN
    flow = _flow("flows/prune.py:prune_flow")
    for bad in ({"keep_within": "soon"}, {"keep_last": -2}, {"min_keep": -1}):
        with pytest.raises(ParameterTypeError, match=next(iter(bad))):
            flow.validate_parameters({"policy": bad})


def test_migrate_form_dry_run_first_and_overrides_last():
    schema = _schema("flows/migrate.py:migrate_flow")
    order = sorted(schema["properties"], key=lambda n: schema["properties"][n]["position"])
    assert order == ["dry_run", "migrations_dir", "restore_on_failure", "restore_on_health_failure", "repository",
                     "access", "apply", "overrides"]
    assert schema["properties"]["dry_run"]["default"] is True
    overrides = schema["definitions"]["MigrateOverrides"]
    assert "recorded" in overrides["title"] and list(overrides["properties"]) == ["accept"]  # no safety skipped
    assert overrides["properties"]["accept"]["anyOf"][0]["items"]["pattern"] == ACCEPT_PATTERN


def test_cleanup_and_monitor_forms_offer_choices():
    cleanup = _schema("flows/cleanup.py:cleanup_flow")["properties"]
    assert cleanup["parts"]["items"]["enum"] == ["rows", "storage", "docker", "prefect"]
    assert cleanup["media_mode"]["anyOf"][0]["enum"] == ["dry-run", "quarantine", "delete"]
    respond = _schema("flows/incident.py:incident_respond_flow")
    assert respond["required"] == ["check_id"] and respond["properties"]["check_id"]["pattern"] == CHECK_ID_PATTERN
    monitor = _schema("flows/monitor.py:monitor_flow")["properties"]
    assert _string_schema(monitor["state"])["pattern"] == STATE_PATTERN


def test_the_prefect_server_checks_a_deployment_run_against_the_form(prefect_server):
    """What the UI sends goes through the server's JSON-schema check (nested groups included) before a run
    exists; a valid grouped run is created with its groups as given."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    from deployments.serve import load_deployments

    (restore,) = [d for d in load_deployments() if d.name == "restore"]
    deployment_id = restore.apply()
    with get_client(sync_client=True) as client:
        for bad in ({"source": {"backup": "yesterday"}}, {"target": {"approved": True}},
                    {"access": {"database_url_secret": "postgresql://u:pw@h/db"}}):
            with pytest.raises(PrefectHTTPStatusError, match="409|422"):
                client.create_flow_run_from_deployment(deployment_id, parameters=bad)
        good = {"source": {"backup": "20261126T023000Z-3f9a"}, "target": {"target_database": "charhub_copy"}}
        run = client.create_flow_run_from_deployment(deployment_id, parameters=good)
        assert run.parameters == good
        client.delete_flow_run(run.id)


def test_the_cli_reports_a_value_outside_the_form_as_one_error_line(monkeypatch):
    from typer.testing import CliRunner

    from charhub_ops.cli import app

    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", "postgresql://ops@127.0.0.1:9/charhub_copy")
    result = CliRunner().invoke(app, ["restore", "--backup", "yesterday", "--from", "file:///tmp/nowhere"])
    assert result.exit_code == 1, result.output
    assert "Which backup: backup: String should match pattern" in " ".join(result.output.split())
    result = CliRunner().invoke(app, ["verify", "--from", "ftp://host/x"])
    assert result.exit_code == 1 and "--from: String should match pattern" in " ".join(result.output.split())
