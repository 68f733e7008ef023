"""Each check type against the real thing (Docker engine, PostgreSQL, a tmpfs-free temp dir), without Prefect."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from charhub_ops.monitoring.checks import CheckContext, disk_level, run_check
from charhub_ops.monitoring.config import MonitorConfig
from tests.harness.docker_pg import ensure_busybox_image, require_docker, stop
from tests.harness.monitor import backend_fixture  # noqa: F401 - fixture

NOW = datetime.now(UTC)


def check(**fields):
    return MonitorConfig.model_validate({"checks": [fields]}).checks[0]


def ctx(**kw) -> CheckContext:
    return CheckContext(now=NOW, **kw)


def test_http_p95_over_the_last_probes_fails_a_fast_probe(backend):
    c = check(id="api", type="http", url=backend.url, latency_budget_ms=200, latency_window=5)
    assert run_check(c, ctx()).ok
    slow = run_check(c, ctx(latencies=[900.0, 950.0, 980.0, 990.0]))  # this probe is fast; the window is not
    assert not slow.ok and "p95" in slow.detail and "> budget 200 ms" in slow.detail


def test_http_json_expectation_and_status(backend):
    backend.sh("echo '{\"status\":\"degraded\"}' > /tmp/www/health")
    c = check(id="api", type="http", url=backend.url, expect_json={"status": "ok"})
    result = run_check(c, ctx())
    assert not result.ok and "status = 'degraded' (expected 'ok')" in result.detail


def test_container_stopped_and_restart_count(backend):
    c = check(id="box", type="container", container=backend.name, cpu_max_percent=None, memory_max_percent=None)
    first = run_check(c, ctx())
    assert first.ok and first.facts["restart_count"] == 0
    grown = run_check(c, ctx(restart_count=-1))
    assert not grown.ok and "restart count grew" in grown.detail
    backend.container.kill()
    down = run_check(c, ctx())
    assert not down.ok and "exited" in down.detail
    missing = run_check(check(id="gone", type="container", container="no-such-container-xyz"), ctx())
    assert not missing.ok and "not found" in missing.detail


def test_container_burning_cpu(backend):
    backend.container.exec_run(["sh", "-c", "while :; do :; done"], detach=True)
    c = check(id="box", type="container", container=backend.name, cpu_max_percent=5)
    result = run_check(c, ctx())
    assert not result.ok and "CPU" in result.detail and result.facts["cpu_percent"] > 5
    assert result.facts["memory_bytes"] > 0 and result.facts["memory_percent"] < 100  # no limit: % of the host


@pytest.fixture
def access_log_container():
    client = require_docker()
    name = f"charhub-ops-test-log-{uuid.uuid4().hex[:6]}"
    lines = "; ".join(['echo \'1.2.3.4 - - "GET /a HTTP/1.1" 200 12\''] * 97
                      + ['echo \'1.2.3.4 - - "GET /b HTTP/1.1" 502 0\''] * 3)
    client.containers.run(ensure_busybox_image(client), ["sh", "-c", f"{lines}; sleep 600"], name=name, detach=True,
                          init=True, labels={"charhub-ops-test": "app"})
    c = client.containers.get(name)
    while b"502" not in c.logs():
        pass
    yield name
    stop(client, name)


def test_log_error_rate(access_log_container):
    result = run_check(check(id="logs", type="log_errors", container=access_log_container), ctx())
    assert not result.ok and "3 errors in 100 requests (3.0%; budget 1.0%)" in result.detail
    assert run_check(check(id="logs", type="log_errors", container=access_log_container, max_rate=0.05), ctx()).ok


def test_postgres_connections_exhausted(database):
    held = [psycopg.connect(database) for _ in range(4)]
    try:
        c = check(id="db", type="postgres", max_connections_alert=4)
        result = run_check(c, ctx(database_url=database))
        assert not result.ok and "connections of 100 (alert at 4)" in result.detail
    finally:
        for conn in held:
            conn.close()


def test_postgres_unreachable_is_a_failed_probe_without_the_password():
    c = check(id="db", type="postgres")
    url = "postgresql://charhub:pw-s3cret@127.0.0.1:1/charhub_db"
    result = run_check(c, ctx(database_url=url, secrets=["pw-s3cret"]))
    assert not result.ok and "cannot connect" in result.detail and "pw-s3cret" not in result.detail


@pytest.mark.parametrize(("percent", "level"), [(10, 0), (70, 1), (79.9, 1), (80, 2), (85, 3), (99, 3)])
def test_disk_levels(percent, level):
    assert disk_level(percent, [70, 80, 85]) == level


def test_disk_check_reads_real_usage(tmp_path):
    ok = run_check(check(id="d", type="disk", paths=[str(tmp_path)], levels=[99.97, 99.98, 99.99]), ctx())
    assert ok.ok and str(tmp_path) in ok.detail
    low = run_check(check(id="d", type="disk", paths=[str(tmp_path)], levels=[0.0, 0.001, 0.002]), ctx())
    assert not low.ok and low.level == 3 and "critical" in low.detail


def test_bearer_token_from_a_prefect_secret_block_is_sent_and_never_shown(prefect_server):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prefect.blocks.system import Secret

    from charhub_ops.monitoring.state import CheckState
    from charhub_ops.settings import load_settings
    from tasks.monitor import check_context

    token = f"tok-{uuid.uuid4().hex}"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            good = self.headers.get("Authorization") == f"Bearer {token}"
            self.send_response(200 if good else 401)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}' if good else f"bad token {self.headers.get('Authorization')}".encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = f"comfy-{uuid.uuid4().hex[:6]}"
    Secret(value=token).save(name)
    url = f"http://127.0.0.1:{server.server_address[1]}/system_stats"
    try:
        good = check(id="comfy", type="http", url=url, bearer_secret=name, expect_json={"status": "ok"})
        assert run_check(good, check_context(good, load_settings(), CheckState(check_id="comfy"), NOW)).ok
        Secret(value="wrong-token-value").save(name, overwrite=True)
        bad = run_check(good, check_context(good, load_settings(), CheckState(check_id="comfy"), NOW))
        assert not bad.ok and "status 401" in bad.detail and token not in bad.detail
    finally:
        server.shutdown()
