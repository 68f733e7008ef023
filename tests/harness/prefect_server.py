"""A real Prefect deployment for end-to-end tests: ``prefect server`` + the deployments of prefect.yaml + workers.

:func:`start_prefect_server` starts the server process (API only by default; optionally the UI, the
background services that run triggers, and a PostgreSQL database instead of SQLite — SQLite answers 503
"database is locked" under concurrent writers such as two workers). :class:`OpsStack` adds what production
has: the work pool and every deployment registered by ``charhub-ops setup``, and N process workers
(``prefect worker start --pool charhub-ops``) whose environment names the checkout (CHARHUB_OPS_HOME), the
database and the repository. Like production (docs/deployments.md, "Access"), the stack's server runs with
basic auth and
CSRF protection on: workers, ``setup`` and this harness send PREFECT_API_AUTH_STRING (``OpsStack.auth``, a
fresh random value per stack); a request without it is refused. The fixture :func:`ops_stack` starts one
that the browser, event-chain and scale-out tests share; teardown kills every process it started.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.harness.services import PgCluster, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "charhub-ops"
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
MONITOR_CHECK = "e2e-web"


def _wait_healthy(proc: subprocess.Popen, api: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout  # ~12 s on a quiet machine, more with PostgreSQL migrations
    while True:
        assert proc.poll() is None, "prefect server exited: " + log.read_text()[-2000:]
        assert time.monotonic() < deadline, "prefect server not healthy: " + log.read_text()[-2000:]
        try:
            with urllib.request.urlopen(api + "/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)


def start_prefect_server(home: Path, *, database_url: str | None = None, ui: bool = False, services: bool = False,
                         settings: dict[str, str] | None = None, auth: str | None = None,
                         host: str = "127.0.0.1", port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A healthy ``prefect server start`` (own PREFECT_HOME, own port); returns (process, API URL).

    ``database_url``: a PostgreSQL URL (postgresql://…, made postgresql+asyncpg://); ``ui``: serve the UI
    (PREFECT_UI_API_URL points it at this port); ``services``: run the background services (events,
    triggers, pauses) except the scheduler, so schedules of prefect.yaml start nothing during tests;
    ``settings``: more PREFECT_* variables for the server process (e.g. shorter foreman timeouts);
    ``auth``: ``user:password`` — basic auth for the API and the UI, with CSRF protection on, as
    docs/deployments.md, "Access", says production runs; ``host``: the address to bind (the URL returned
    always uses 127.0.0.1);
    ``port``: a given port (a restart on the same port and PREFECT_HOME is the same server to its clients)."""
    port = port or free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": api, "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
           "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
           # a run waiting for a held global limit (postgres-<db>) asks again after at most this (default 30 s)
           "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "2"}
    env.pop("PREFECT_API_URL", None)
    env.update(settings or {})
    if auth:
        env.update(PREFECT_SERVER_API_AUTH_STRING=auth, PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED="true")
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    args = ["--host", host, "--port", str(port)] + ([] if ui else ["--no-ui"])
    args += [] if services else ["--no-services"]
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_healthy(proc, api, log)
    except BaseException:
        kill(proc)
        raise
    return proc, api


def drain_events() -> None:
    """Send this process's pending Prefect events and retire the worker sending them, while its server still
    answers: a later event opens a new one for the settings of that moment. Otherwise the worker stays bound
    to a stopped server: a later test's events are lost, and its reconnect attempts hold up the teardown."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=30)


def kill(proc: subprocess.Popen) -> None:
    """Kill a process started with ``start_new_session`` and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@dataclass
class OpsStack:
    """A server with the deployments of prefect.yaml and process workers on the pool ``charhub-ops``."""

    home: Path
    api: str
    server: subprocess.Popen
    worker_env: dict[str, str]
    auth: str | None = None  # user:password of the server's basic auth
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def ui(self) -> str:
        return self.api.removesuffix("/api")

    def client_env(self) -> dict[str, str]:
        env = {"PREFECT_API_URL": self.api, "PREFECT_HOME": str(self.home / "client")}
        return {**env, "PREFECT_API_AUTH_STRING": self.auth} if self.auth else env

    @contextmanager
    def settings(self) -> Iterator[None]:
        """Point this process's Prefect client at the stack (``get_client``, blocks, events) inside the block."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api, PREFECT_API_AUTH_STRING: self.auth}):
            yield

    def register(self) -> dict:
        """``charhub-ops setup --json``: the work pool, automations (none: no notification block) and every
        deployment of prefect.yaml; returns its JSON."""
        env = {**os.environ, **self.client_env(), "CHARHUB_OPS_HOME": str(ROOT)}
        done = subprocess.run([str(BIN / "charhub-ops"), "setup", "--json"], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    def start_workers(self, count: int, limit: int | None = None) -> None:
        """``count`` process workers on the pool, each running at most ``limit`` flow runs at once."""
        for _ in range(count):
            n = len(self.workers) + 1
            home = self.home / f"worker-{n}"
            home.mkdir()
            env = {**self.worker_env, **self.client_env(), "PREFECT_HOME": str(home)}
            cmd = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", f"e2e-worker-{n}"]
            with open(home / "worker.log", "wb") as out:
                self.workers.append(subprocess.Popen(cmd + (["--limit", str(limit)] if limit else []), cwd=home,
                                                     env=env, stdout=out, stderr=subprocess.STDOUT,
                                                     start_new_session=True))

    def worker_log(self, n: int) -> str:
        return (self.home / f"worker-{n}" / "worker.log").read_text(errors="replace")

    def request(self, method: str, path: str, body: dict | None = None) -> dict | list:
        """One API call with the stack's credentials (and a CSRF token for a write, as Prefect's client does)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", **self._auth_header()}
        if method != "GET" and self.auth:
            headers.update(self._csrf(headers))
        req = urllib.request.Request(self.api + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def _auth_header(self) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(self.auth.encode()).decode()} if self.auth else {}

    def _csrf(self, headers: dict[str, str]) -> dict[str, str]:
        client = f"e2e-harness-{os.getpid()}"
        req = urllib.request.Request(f"{self.api}/csrf-token?client={client}", headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            token = json.loads(resp.read())["token"]
        return {"Prefect-Csrf-Token": token, "Prefect-Csrf-Client": client}

    def deployment_id(self, name: str) -> str:
        (dep,) = [d for d in self.request("POST", "/deployments/filter", {}) if d["name"] == name]
        return dep["id"]

    def run(self, deployment: str, parameters: dict | None = None) -> str:
        """Create a flow run of ``deployment`` (picked up by a worker); returns its id."""
        run = self.request("POST", f"/deployments/{self.deployment_id(deployment)}/create_flow_run",
                           {"parameters": parameters or {}})
        return run["id"]

    def flow_run(self, run_id: str) -> dict:
        return self.request("GET", f"/flow_runs/{run_id}")

    def wait_for_state(self, run_id: str, *states: str, timeout: float = 300) -> dict:
        """Poll the run until its state type is one of ``states`` (default: a final one)."""
        wanted = states or FINAL
        deadline = time.monotonic() + timeout
        while True:
            run = self.flow_run(run_id)
            if run["state_type"] in wanted:
                return run
            assert time.monotonic() < deadline, f"run {run['name']} still {run['state_name']} after {timeout} s"
            time.sleep(0.5)

    def runs_of(self, deployment: str) -> list[dict]:
        """Every flow run of ``deployment``, oldest first."""
        body = {"deployments": {"id": {"any_": [self.deployment_id(deployment)]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return self.request("POST", "/flow_runs/filter", body)

    def wait_idle(self, timeout: float = 300) -> None:
        """Until no flow run is pending, running or waiting for a slot (triggered runs of earlier tests)."""
        body = {"flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING", "SCHEDULED"]}}}}
        deadline = time.monotonic() + timeout
        while busy := self.request("POST", "/flow_runs/filter", body):
            assert time.monotonic() < deadline, f"still busy: {[r['name'] for r in busy]}"
            time.sleep(0.5)

    def task_runs(self, run_id: str, name: str) -> list[dict]:
        body = {"flow_runs": {"id": {"any_": [run_id]}}, "task_runs": {"name": {"like_": name}}}
        return self.request("POST", "/task_runs/filter", body)

    def emit(self, event: str, resource_id: str, payload: dict) -> None:
        """Post one event to the server, as a monitor pass or any client would emit it."""
        body = [{"id": str(uuid.uuid4()), "occurred": datetime.now(UTC).isoformat(), "event": event,
                 "resource": {"prefect.resource.id": resource_id}, "payload": payload}]
        self.request("POST", "/events", body)

    def logs(self, run_id: str) -> list[dict]:
        body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
        return self.request("POST", "/logs/filter", body)

    def stop(self) -> None:
        drain_events()
        for proc in [*self.workers, self.server]:
            kill(proc)


def start_stack(home: Path, pg: PgCluster, worker_env: dict[str, str], *, workers: int = 2,
                worker_limit: int | None = None) -> OpsStack:
    """A PostgreSQL-backed server with UI and services, basic auth and CSRF protection on, the deployments
    registered, ``workers`` workers."""
    auth = f"ops:{uuid.uuid4().hex}"
    server, api = start_prefect_server(home, database_url=pg.create_database("prefect_e2e"), ui=True, services=True,
                                       auth=auth)
    stack = OpsStack(home=home, api=api, server=server, worker_env=worker_env, auth=auth)
    atexit.register(stack.stop)  # its processes run in their own sessions: never leave them behind
    try:
        stack.register()
        stack.start_workers(workers, worker_limit)
    except BaseException:
        stack.stop()
        raise
    return stack


def start_ops_stack(home: Path, pg: PgCluster, poll: float = 1) -> OpsStack:
    """The stack the e2e tests and bench/event_latency.py use: two workers running at most two flow runs
    each (polling every ``poll`` s), a production target (restores need approval), the application database
    ``e2e_app`` (table ``items``) as DATABASE_URL, a file repository, the Secret block charhub-ops-scratch-url
    (verify-after-backup restores into this cluster), a monitor config with one check (MONITOR_CHECK)."""
    app = pg.create_database("e2e_app")
    with pg.connect("e2e_app") as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g")
    monitor = home / "monitor.yaml"
    monitor.write_text(json.dumps({"checks": [{"id": MONITOR_CHECK, "type": "http", "url": "http://127.0.0.1:9/",
                                               "threshold": 1, "recovery_threshold": 1, "timeout": 1}],
                                   "incident_dir": str(home / "incidents")}))
    env = {**os.environ, "CHARHUB_OPS_HOME": str(ROOT), "DATABASE_URL": app, "CHARHUB_OPS_PRODUCTION": "true",
           "CHARHUB_OPS_REPOSITORY": f"file://{home}/repo", "PREFECT_WORKER_QUERY_SECONDS": str(poll),
           "CHARHUB_OPS_TASK_RETRIES": "0", "CHARHUB_OPS_CLEANUP_PAUSE": "0",
           "CHARHUB_OPS_MONITOR_CONFIG": str(monitor)}
    stack = start_stack(home, pg, env, workers=2, worker_limit=2)
    with stack.settings():
        from prefect.blocks.system import Secret

        Secret(value=pg.url("postgres")).save("charhub-ops-scratch-url", overwrite=True)
    return stack


_SHARED: dict[str, OpsStack] = {}


@pytest.fixture(scope="module")
def ops_stack(pg, tmp_path_factory, request) -> Iterator[OpsStack]:
    """One :func:`start_ops_stack` shared by the modules that import this fixture: started by the first,
    stopped after the last of them in the session's order (not left idle through the rest of the suite)."""
    if "stack" not in _SHARED:
        _SHARED["stack"] = start_ops_stack(tmp_path_factory.mktemp("ops-stack"), pg)
    yield _SHARED["stack"]
    items = request.session.items
    last = max(i for i, item in enumerate(items) if getattr(item, "module", None) is request.module)
    if not any("ops_stack" in item.fixturenames for item in items[last + 1:]):
        _SHARED.pop("stack").stop()
