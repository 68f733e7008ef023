"""The operator's path through the Prefect UI, in Debian's Chromium driven by Playwright.

Against the shared stack (tests/harness/prefect_server.py): a real ``prefect server`` with its UI, basic auth
and CSRF protection on, the deployments of prefect.yaml registered by ``charhub-ops setup``, two process
workers. Every page logs in through the UI's login form first, as an operator does. Each test clicks
what an operator clicks; the outcome is read from the API (final states) and the database, never timed.
Screenshots of every step land in test-artifacts/browser/ (gitignored), kept after the run.
"""

from __future__ import annotations

import base64
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import prefect_server
from tests.harness.prefect_server import ROOT, OpsStack

ops_stack = prefect_server.ops_stack  # the shared stack (one per session)
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "test-artifacts" / "browser"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"no {CHROMIUM} in CI (.ci/run installs chromium)")
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:  # launch() gives Chromium a new temporary profile
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def anonymous_page(browser, request):
    """A page in a fresh browser context: nothing stored, not logged in."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(90_000)  # a loaded CI machine; nothing here is a timing assertion
    page.shot = lambda step: page.screenshot(path=SHOTS / f"{request.node.name}-{step}.png", full_page=True)
    yield page
    page.shot("last")
    page.close()


@pytest.fixture
def page(anonymous_page, ops_stack):
    """A page logged in with the stack's auth string through the UI's login form."""
    login(anonymous_page, ops_stack, ops_stack.auth)
    anonymous_page.wait_for_url(lambda url: "/login" not in url)
    assert anonymous_page.evaluate("localStorage.getItem('prefect-password')"), "the login did not hold"
    return anonymous_page


def login(page, stack: OpsStack, auth: str) -> None:
    """The UI's login page (where the UI sends anyone without a stored auth string) takes ``user:password``.
    Opened directly and settled first: a page's own requests answered 401 after the login would undo it."""
    page.goto(f"{stack.ui}/login")
    page.wait_for_load_state("networkidle")
    page.get_by_placeholder("admin:pass").fill(auth)
    page.get_by_role("button", name="Login", exact=True).click()


def field(scope, label: str):
    """A parameter of a Prefect schema form (in a page or a dialog), found by its label."""
    page = getattr(scope, "page", scope)  # a Locator knows its page; `has` must be built from the page
    # a group's property contains its fields' labels too: the innermost (last in document order) is the field
    return scope.locator(".schema-form-property", has=page.get_by_text(label, exact=True)).last


def fill_optional_text(scope, label: str, value: str) -> None:
    """An optional string parameter starts as None: switch it to a string, then type."""
    prop = field(scope, label)
    prop.get_by_role("button", name="str", exact=True).click()
    prop.get_by_role("textbox").fill(value)


def start_custom_run(page, stack: OpsStack, deployment: str) -> None:
    page.goto(f"{stack.ui}/deployments/deployment/{stack.deployment_id(deployment)}")
    page.get_by_role("button", name="Run", exact=True).click()  # exact: "Runs" in the sidebar matches too
    page.get_by_text("Custom run", exact=True).click()


def wait_for_run(stack: OpsStack, deployment: str, parameter: str, value: str) -> str:
    """The id of the run of ``deployment`` whose ``parameter`` is ``value`` (created by the UI)."""
    deadline = time.monotonic() + 120
    while True:
        runs = [r for r in stack.runs_of(deployment) if r["parameters"].get(parameter) == value]
        if runs:
            return runs[-1]["id"]
        assert time.monotonic() < deadline, f"no {deployment} run with {parameter}={value}"
        time.sleep(0.5)


def _status(url: str, auth: str | None = None) -> int:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_ui_asks_for_the_auth_string_and_the_api_refuses_strangers(ops_stack, anonymous_page) -> None:
    page = anonymous_page
    dep = ops_stack.deployment_id("restore")
    assert _status(f"{ops_stack.api}/deployments/{dep}") == 401  # no credentials: refused
    assert _status(f"{ops_stack.api}/deployments/{dep}", "ops:guess") == 401
    assert _status(f"{ops_stack.api}/deployments/{dep}", ops_stack.auth) == 200
    page.goto(f"{ops_stack.ui}/deployments/deployment/{dep}")
    page.wait_for_url("**/login**")  # the UI sends a stranger to its login page
    login(page, ops_stack, "ops:guess")
    page.get_by_text("Authentication failed.", exact=False).first.wait_for()
    page.shot("refused")
    assert page.evaluate("localStorage.getItem('prefect-password')") is None  # nothing kept of a wrong guess
    login(page, ops_stack, ops_stack.auth)
    page.wait_for_url(lambda url: "/login" not in url)
    page.goto(f"{ops_stack.ui}/deployments/deployment/{dep}")
    page.get_by_role("button", name="Run", exact=True).wait_for()
    page.shot("in")


def test_custom_backup_run_from_the_form_completes_with_its_report(ops_stack, page, tmp_path) -> None:
    repo = f"file://{tmp_path}/from-the-form"
    start_custom_run(page, ops_stack, "nightly-backup")
    fill_optional_text(page, "repository (Optional)", repo)
    # a field inside a group (flows/params.py Access): the Secret block of another database of the server
    fill_optional_text(page, "Database URL (Secret block name) (Optional)", "charhub-ops-scratch-url")
    page.shot("form")
    page.get_by_role("button", name="Submit", exact=True).click()
    run_id = wait_for_run(ops_stack, "nightly-backup", "repository", repo)
    run = ops_stack.wait_for_state(run_id)
    assert run["state_type"] == "COMPLETED", run["state"]["message"]
    assert run["parameters"]["access"]["database_url_secret"] == "charhub-ops-scratch-url"
    assert list((tmp_path / "from-the-form" / "postgres").glob("*/manifest.json")), "no backup where the form said"

    page.goto(f"{ops_stack.ui}/runs/flow-run/{run_id}")
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text("backup-report", exact=True).click()
    page.wait_for_url("**/artifacts/artifact/**")  # the artifact's own page renders the markdown
    page.get_by_role("heading", name=f"Backup to {repo}").wait_for()
    page.shot("report")


def _start_paused_restore(stack: OpsStack) -> str:
    run_id = stack.run("restore", {"target": {"replace": True}, "source": {"source_database": "e2e_app"}})
    run = stack.wait_for_state(run_id, "PAUSED", "COMPLETED", "FAILED", "CRASHED")
    assert run["state_type"] == "PAUSED", run["state"]["message"]
    return run_id


def _open_approval(page, stack: OpsStack, run_id: str):
    page.goto(f"{stack.ui}/runs/flow-run/{run_id}")
    page.get_by_role("button", name="Resume", exact=True).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Restore plan", exact=False).wait_for()
    return dialog


def _databases(pg) -> set[str]:
    with pg.connect() as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'e2e_app%'")}


def _items(pg, database: str = "e2e_app") -> int:
    with pg.connect(database) as conn:
        return conn.execute("SELECT count(*) FROM items").fetchone()[0]


def test_restore_of_production_waits_for_approval_in_the_browser(ops_stack, page, pg) -> None:
    backup = ops_stack.wait_for_state(ops_stack.run("nightly-backup"))
    assert backup["state_type"] == "COMPLETED", backup["state"]["message"]
    rows = _items(pg)
    with pg.connect("e2e_app") as conn:  # the accident the restore repairs
        conn.execute("DELETE FROM items WHERE id > 900")
    run_id = _start_paused_restore(ops_stack)
    assert _items(pg) == rows - 100, "the live database changed before anyone approved"

    dialog = _open_approval(page, ops_stack, run_id)
    plan = dialog.inner_text()
    assert "e2e_app_restore_" in plan and "safety backup" in plan and f"{rows}" in plan
    field(dialog, "Approve (Optional)").get_by_role("switch").click()
    field(dialog, "Reason").get_by_role("textbox").fill("e2e: items deleted by accident")  # required
    page.shot("approve")
    dialog.get_by_role("button", name="Submit", exact=True).click()

    run = ops_stack.wait_for_state(run_id)
    assert run["state_type"] == "COMPLETED", run["state"]["message"]
    assert _items(pg) == rows
    (previous,) = [d for d in _databases(pg) if d.startswith("e2e_app_pre_restore_")]
    assert _items(pg, previous) == rows - 100  # kept, never dropped
    report = _artifact(ops_stack, run_id, "restore-report")  # the answer, its UTC time and reason
    assert re.search(r"\*\*Approved\*\* at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC .*: e2e: items deleted by accident",
                     report), report


def _artifact(stack: OpsStack, run_id: str, key: str) -> str:
    body = {"artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": [key]}}}
    (artifact,) = stack.request("POST", "/artifacts/filter", body)
    return artifact["data"]


def test_a_refused_restore_touches_nothing(ops_stack, page, pg) -> None:
    before, rows = _databases(pg), _items(pg)
    run_id = _start_paused_restore(ops_stack)
    dialog = _open_approval(page, ops_stack, run_id)
    field(dialog, "Reason").get_by_role("textbox").fill("e2e: not now")
    page.shot("refuse")
    dialog.get_by_role("button", name="Submit", exact=True).click()  # Approve left off

    run = ops_stack.wait_for_state(run_id)
    assert run["state_type"] == "FAILED" and "not approved: e2e: not now" in run["state"]["message"]
    assert _databases(pg) == before and _items(pg) == rows
    assert "**Refused** at " in _artifact(ops_stack, run_id, "approval")


def test_a_failed_run_retried_from_the_ui_completes_once_the_repository_is_fixed(ops_stack, page, tmp_path) -> None:
    blocked = tmp_path / "repo"
    blocked.write_text("a file where the repository directory belongs")
    repo = f"file://{blocked}"
    run_id = ops_stack.run("nightly-backup", {"repository": repo})
    run = ops_stack.wait_for_state(run_id)
    assert run["state_type"] == "FAILED", run["state"]["message"]

    blocked.unlink()  # the fix: the repository's place is free again
    page.goto(f"{ops_stack.ui}/runs/flow-run/{run_id}")
    retry = page.get_by_role("button", name="Retry", exact=False)
    retry.wait_for()
    page.shot("failed")
    retry.click()
    confirm = page.get_by_role("dialog")
    if confirm.count():
        confirm.get_by_role("button", name="Retry", exact=False).click()
    ops_stack.wait_for_state(run_id, "SCHEDULED", "PENDING", "RUNNING", "COMPLETED")
    run = ops_stack.wait_for_state(run_id)
    assert run["state_type"] == "COMPLETED", run["state"]["message"]
    assert run["run_count"] >= 2
    assert list((blocked / "e2e_app").glob("*/manifest.json"))
    page.reload()
    page.get_by_text("Completed", exact=True).first.wait_for()


def _pages(stack: OpsStack, path: str, body: dict) -> list:
    out, offset = [], 0
    while page := stack.request("POST", path, {**body, "offset": offset, "limit": 200}):
        out += page
        offset += len(page)
    return out


def test_the_auth_string_is_in_no_log_artifact_event_or_process_output(ops_stack) -> None:
    """After the runs above (and setup): the credential is nowhere the stack records or prints."""
    _, password = ops_stack.auth.split(":", 1)
    forms = {password, base64.b64encode(ops_stack.auth.encode()).decode(), base64.b64encode(password.encode()).decode()}
    events = ops_stack.request("POST", "/events/filter", {"limit": 50})
    records = {
        "logs": _pages(ops_stack, "/logs/filter", {}), "artifacts": _pages(ops_stack, "/artifacts/filter", {}),
        "flow runs": _pages(ops_stack, "/flow_runs/filter", {}), "events": events,
        "server log": (ops_stack.home / "server.log").read_text(errors="replace"),
        "worker logs": [ops_stack.worker_log(n) for n in range(1, len(ops_stack.workers) + 1)],
    }
    assert records["logs"] and records["artifacts"], "nothing was searched"
    leaks = [(where, form[:4]) for where, data in records.items() for form in forms if form in repr(data)]
    assert not leaks, leaks
