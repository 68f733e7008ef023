"""An S3 repository behind TLS: moto's S3 server with stunnel4 in front (a self-signed certificate pgBackRest
trusts through pitr_s3_ca_file), the keys and the endpoint from the storage group."""

from __future__ import annotations

import uuid

import boto3
import pytest

from tests.harness.pitr import pgbackrest_available, start_archiving_cluster, start_tls_s3_server
from tests.test_pitr_core import KEY, SECRET, ok_json, pitr

pytestmark = pytest.mark.skipif(not pgbackrest_available(), reason="pgbackrest is not installed (apt-get install "
                                                                   "pgbackrest; .ci/run installs it)")
BUCKET = "charhub-pitr"


@pytest.fixture
def s3():
    server = start_tls_s3_server(BUCKET)
    yield server
    server.stop()


@pytest.fixture
def cluster():
    c = start_archiving_cluster(f"s3{uuid.uuid4().hex[:6]}")
    yield c
    c.remove()


def test_setup_backup_and_info_on_s3_behind_tls(s3, cluster):
    env = {"CHARHUB_OPS_PITR_REPOSITORY": f"s3://{BUCKET}/prod/pitr", "R2_ENDPOINT_URL": s3.endpoint,
           "R2_ACCESS_KEY_ID": KEY, "R2_SECRET_ACCESS_KEY": SECRET, "CHARHUB_OPS_PITR_S3_CA_FILE": str(s3.ca_file),
           "CHARHUB_OPS_REPOSITORY": f"s3://{BUCKET}/prod/logical"}  # same bucket, separate prefix: allowed
    assert ok_json(pitr(cluster, "setup", "--json", **env))["created"] is True
    assert ok_json(pitr(cluster, "setup", "--json", **env))["created"] is False
    full = ok_json(pitr(cluster, "backup", "--json", **env))
    diff = ok_json(pitr(cluster, "backup", "--type", "diff", "--json", **env))
    info = ok_json(pitr(cluster, "info", "--json", **env))
    assert [b["label"] for b in info["backups"]] == [full["label"], diff["label"]]
    client = boto3.client("s3", endpoint_url=s3.plain_endpoint, region_name="us-east-1", aws_access_key_id="t",
                          aws_secret_access_key="t")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys and all(k.startswith("prod/pitr/") for k in keys)
    assert any(k.startswith(f"prod/pitr/backup/{cluster.stanza}/{full['label']}/") for k in keys)
    assert any(k.startswith(f"prod/pitr/archive/{cluster.stanza}/") for k in keys)
