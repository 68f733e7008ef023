"""Helpers for the monitoring drills: a backend container on a fixed host port with fault switches (slow
answers, a CPU burner, access-log lines), a config writer, monitor passes, a small tmpfs (notifications:
tests/harness/webhook.py)."""

from __future__ import annotations

import contextvars
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.harness.app import SCRIPT
from tests.harness.docker_pg import ensure_busybox_image, require_docker, stop
from tests.harness.services import free_port

__all__ = ["Backend", "backend_fixture", "write_config", "small_tmpfs_fixture", "new_id", "http_check", "passes",
           "store", "serving_one_run"]

# A CGI health endpoint answering after the delay in /run/delay (a tmpfs: a restart clears the fault).
_DELAYED = """mkdir -p /tmp/www/cgi-bin && cat > /tmp/www/cgi-bin/health <<'EOF'
#!/bin/sh
sleep $(cat /run/delay 2>/dev/null || echo 0)
printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'
EOF
chmod +x /tmp/www/cgi-bin/health"""
_ACCESS = '1.2.3.4 - - "GET /api HTTP/1.1" {status} 12'


class Backend:
    """busybox httpd with a /health file, published on a fixed 127.0.0.1 port (stable across restarts)."""

    def __init__(self, client, name: str, port: int) -> None:
        self.client, self.name, self.port = client, name, port
        self.url = f"http://127.0.0.1:{port}/health"

    @property
    def container(self):
        return self.client.containers.get(self.name)

    def sh(self, command: str) -> None:
        result = self.container.exec_run(["sh", "-c", command])
        assert result.exit_code == 0, result.output

    def break_health(self) -> None:
        self.sh("rm -f /tmp/www/health")  # busybox httpd answers 404: the check's expected 200 fails

    def fix_health(self) -> None:
        self.sh("echo ok > /tmp/www/health")

    def delayed_url(self) -> str:
        """A health URL whose answer waits for :meth:`slow_down`'s delay (none until then)."""
        self.sh(_DELAYED)
        return f"http://127.0.0.1:{self.port}/cgi-bin/health"

    def slow_down(self, seconds: float) -> None:
        self.sh(f"echo {seconds:g} > /run/delay")  # /run is a tmpfs: gone after a restart

    def burn_cpu(self) -> None:
        """A busy loop inside the container (a restart ends it)."""
        self.container.exec_run(["sh", "-c", "while :; do :; done"], detach=True)

    def access_log(self, ok: int, errors: int = 0) -> None:
        """``ok`` 200 and ``errors`` 502 access-log lines on the container's output; returns once Docker has
        them (the log driver writes asynchronously)."""
        marker = f"logged-{uuid.uuid4().hex[:8]}"
        lines = [_ACCESS.format(status=200)] * ok + [_ACCESS.format(status=502)] * errors + [marker]
        self.sh("cat > /proc/1/fd/1 <<'EOF'\n" + "\n".join(lines) + "\nEOF")  # PID 1's stdout is the log
        _until(lambda: marker.encode() in self.container.logs(tail=3), f"{marker} in the logs")


@pytest.fixture(name="backend")
def backend_fixture():
    client = require_docker()
    name, port = f"charhub-ops-test-backend-{uuid.uuid4().hex[:8]}", free_port()
    stop(client, name)
    client.containers.run(ensure_busybox_image(client), ["sh", "-c", SCRIPT], name=name, detach=True, init=True,
                          labels={"charhub-ops-test": "app"}, ports={"8080/tcp": ("127.0.0.1", port)},
                          tmpfs={"/run": ""})
    backend = Backend(client, name, port)
    _wait_answering(backend.url)
    yield backend
    stop(client, name)
    client.close()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except OSError:
        return False
    return True


def _wait_answering(url: str, timeout: float = 20.0) -> None:
    """Until httpd answers (a fresh container needs a moment before its port accepts connections)."""
    _until(lambda: _answers(url), f"{url} answering", timeout)


def _until(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:g} s")
        time.sleep(0.1)


def write_config(path: Path, checks: list[dict], **extra) -> str:
    config = {"checks": checks, "incident_dir": str(path / "incidents"), **extra}
    file = path / f"monitor-{uuid.uuid4().hex[:6]}.yaml"
    file.write_text(yaml.safe_dump(config))
    return str(file)


@pytest.fixture(name="small_tmpfs")
def small_tmpfs_fixture(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (root needed): {done.stderr.decode()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def http_check(backend: Backend, cid: str, **extra) -> dict:
    return {"id": cid, "type": "http", "url": backend.url, "timeout": 2, "latency_budget_ms": 2000,
            "container": backend.name, "severity": "critical", "mitigations": ["restart_container"], **extra}


def passes(config: str, n: int) -> list[dict]:
    """``n`` monitor passes; the row of the (only) check in each."""
    from flows.monitor import monitor_flow

    return [monitor_flow(config=config)[0] for _ in range(n)]


def store():
    """The monitor's state store (on the Prefect test server)."""
    from charhub_ops.settings import load_settings
    from tasks.monitor import open_state

    return open_state(load_settings())


@contextmanager
def serving_one_run(flow, name: str, accept: Callable[[dict], bool]) -> Iterator:
    """Apply prefect.yaml's deployment ``name`` (without its triggers) to the test server and, like a worker,
    execute in this process the first of its scheduled runs whose parameters ``accept`` takes. Yields the
    deployment id."""
    from deployments.serve import load_deployments

    (deployment,) = [d for d in load_deployments() if d.name == name]
    assert deployment.flow_name == flow.name
    deployment.triggers = []  # an event must not start other runs of it during the test
    deployment_id = deployment.apply()
    stop = threading.Event()
    worker = threading.Thread(target=contextvars.copy_context().run,  # the test server's settings
                              args=(_run_first, flow, deployment_id, accept, stop), daemon=True)
    worker.start()
    try:
        yield deployment_id
    finally:
        stop.set()
        worker.join(60)


def _run_first(flow, deployment_id, accept: Callable[[dict], bool], stop: threading.Event) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.flow_engine import run_flow

    only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    with get_client(sync_client=True) as client:
        while not stop.wait(0.2):
            runs = [r for r in client.read_flow_runs(deployment_filter=only)
                    if r.state and r.state.is_scheduled() and accept(r.parameters)]
            if runs:
                run_flow(flow, flow_run=runs[0], parameters=runs[0].parameters, return_type="state")
                return
