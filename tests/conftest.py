"""Session-wide real services: PostgreSQL, an S3 server, Prefect's test harness, Docker (tests/harness)."""

from __future__ import annotations

import os
import uuid

import boto3
import pytest

from tests.harness.app import app_container  # noqa: F401 - fixture
from tests.harness.docker_pg import pg_container, pg_other_settings, pg_sql_ascii  # noqa: F401 - session fixtures
from tests.harness.services import start_pg_cluster, start_s3_server

pytest_plugins = ["tests.harness.ci_guard"]

# S3 credentials for the moto server; set before any boto3 client is made.
# A paused run checks for its approval every second (production: every 10 s; it also waits that long first).
os.environ.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "CHARHUB_OPS_TASK_RETRIES": "0",
                   "CHARHUB_OPS_APPROVAL_POLL_SECONDS": "1",
                   "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
                   "AWS_DEFAULT_REGION": "us-east-1"})
for var in ("DATABASE_URL", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_ENDPOINT_URL", "R2_ACCOUNT_ID"):
    os.environ.pop(var, None)


@pytest.fixture(scope="session")
def pg():
    cluster = start_pg_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def s3_server():
    server = start_s3_server()
    os.environ["AWS_ENDPOINT_URL_S3"] = server.endpoint
    yield server
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    server.stop()


@pytest.fixture
def bucket(s3_server) -> str:
    """A fresh bucket on the S3 server."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server.endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def database(pg, request) -> str:
    """A fresh, empty database; returns its URL."""
    name = "db_" + uuid.uuid4().hex[:10]
    return pg.create_database(name)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One Prefect test server for the session, without the 1 s heartbeat cost per flow run."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        with prefect_test_harness(server_startup_timeout=60):
            from prefect.settings import PREFECT_API_URL

            yield PREFECT_API_URL.value()
