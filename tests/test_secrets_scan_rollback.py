"""Secrets scan of the flows that read a service's own output (issue 16, item 14): the monitor's pass and
incident flow (diagnosis with the container's logs) and the deploy guard (pre with records sealed to the
backup recipients, a failed gate through the CLI, a rollback whose report shows the replaced container's
logs) — run on the real Docker engine and Prefect server against a release that logs its secrets.

The service's environment holds ``ENV_SECRET`` (found in the logs only by masking every environment
value); the logs also carry a ``DB_KEY=`` assignment, a JSON password and an ``Authorization: Basic``
header (found by their shape). Then the scan of tests/test_secrets_scan.py runs over what those flows
left: the Prefect database and API records (artifacts, logs, events, runs), this process's log records,
the CLI's output, the notifications, and every file of the repository, the state store and the incident
directory. The rollback report must still show the logs (masked): the scan reads something real.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from pyrage import x25519
from typer.testing import CliRunner

from charhub_ops.cli import app
from tests.harness.monitor import new_id
from tests.harness.service_images import (
    V1,
    V2,
    configure,
    deploy_env_fixture,  # noqa: F401 - fixture
    service_fixture,  # noqa: F401 - fixture
)
from tests.harness.webhook import notification_hook
from tests.test_secrets_scan import _api_pages, _flush_to_server, _prefect_files, _Records, find, needles

RB_MARK = "rb8k2m4x7q"  # in no name, key or id the scenario makes: only in secrets
ENV_SECRET = f"Env-{RB_MARK}-value"
LOGGED_KEY = f"Key-{RB_MARK}-logged"
JSON_PASSWORD = f"Json-{RB_MARK}-pw"
BASIC = base64.b64encode(f"ops:{RB_MARK}-basic".encode()).decode()
SECRETS = {"environment value": ENV_SECRET, "DB_KEY": LOGGED_KEY, "JSON password": JSON_PASSWORD,
           "basic credentials": BASIC}


def _log_secrets(service) -> None:
    """The release writes its secrets to its own output (PID 1's stdout is the container log)."""
    marker = new_id("logged")
    lines = [f"connecting to payments with {ENV_SECRET}", f"config: DB_KEY={LOGGED_KEY} region=eu",
             json.dumps({"user": "charhub", "password": JSON_PASSWORD}), f"GET /x Authorization: Basic {BASIC}",
             marker]
    service.sh("cat > /proc/1/fd/1 <<'EOF'\n" + "\n".join(lines) + "\nEOF")
    for _ in range(100):
        if marker.encode() in service.container.logs(tail=3):
            return
    raise AssertionError("the logged secrets never reached the container log")


def _monitor_and_respond(service, cid: str) -> None:
    from charhub_ops.monitoring.config import load_config
    from charhub_ops.monitoring.runner import run_pass
    from charhub_ops.monitoring.store import repository_state
    from charhub_ops.settings import load_settings
    from flows.incident import incident_respond_flow

    settings = load_settings()
    store, cfg = repository_state(settings, None, False), load_config(settings.monitor.config)
    (row,) = run_pass(cfg, store, settings, datetime.now(UTC))
    assert row["state"] == "down", row
    assert incident_respond_flow(check_id=cid)["incident_id"]


def _files(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots if root.exists() for p in root.rglob("*") if p.is_file()}


def test_monitoring_incident_and_rollback_flows_leave_no_secret(service, deploy_env, tmp_path, monkeypatch,
                                                                 prefect_server):
    from flows.deploy import pre_deploy_flow, rollback_flow

    identity = x25519.Identity.generate()
    (tmp_path / "age.key").write_text(f"{identity}\n")
    monkeypatch.setenv("CHARHUB_OPS_ENCRYPT_TO", str(identity.to_public()))
    monkeypatch.setenv("CHARHUB_OPS_AGE_IDENTITY_FILE", str(tmp_path / "age.key"))
    records, env, texts = _Records(), {"PAYMENT_SECRET": ENV_SECRET}, {}
    logging.getLogger().addHandler(records)
    try:
        cid = configure(service, tmp_path, monkeypatch)
        with notification_hook(monkeypatch, new_id("scan-rollback")) as bodies:
            service.run(V2, env)  # a broken release that logs its secrets: the monitor diagnoses it
            _log_secrets(service)
            _monitor_and_respond(service, cid)
            service.run(V1, env)
            pre_deploy_flow(services=[service.name], backup=False)
            service.run(V2, env)
            _log_secrets(service)
            post = CliRunner().invoke(app, ["deploy", "post", "--service", service.name])
            assert post.exit_code == 1, post.output
            texts["deploy post (CLI)"] = post.output
            out = rollback_flow(services=[service.name], reason="deploy gate failed")
        texts["notifications"] = "\n".join(bodies)
        _flush_to_server(prefect_server)
    finally:
        logging.getLogger().removeHandler(records)
    texts["log records"] = "\n".join(records.lines)
    report = Path(out["report"]).read_text()
    assert "DB_KEY=**********" in report and "connecting to payments with **********" in report
    needle = {**needles(SECRETS), RB_MARK.encode(): "marker"}
    hits = [hit for where, text in texts.items() for hit in find(text, where, needle)]
    files = _files(tmp_path / "repo", tmp_path / "state", tmp_path / "incidents")
    assert any("/deploy/record/" in path for path in files) and any(p.endswith(".md") for p in files)
    hits += [hit for path, data in files.items() for hit in find(data, path, needle)]
    for path in ("artifacts", "logs", "flow_runs", "task_runs", "events"):
        hits += [hit for page in _api_pages(prefect_server, path) for hit in find(page, f"API {path}", needle)]
    hits += [hit for path in _prefect_files() for hit in find(path.read_bytes(), str(path), needle)]
    assert hits == []
