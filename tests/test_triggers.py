"""Event chaining on a real Prefect server: charhub.backup.completed starts the restore drill."""

from __future__ import annotations

import time
import uuid

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.events import emit_event


def test_backup_completed_event_starts_verify_with_the_event_parameters(prefect_server):
    from deployments.serve import load_deployments

    (verify,) = [d for d in load_deployments() if d.name == "verify-after-backup"]
    deployment_id = verify.apply()
    backup_id = f"20261126T023000Z-{uuid.uuid4().hex[:4]}"
    time.sleep(1)  # the automation is loaded by the trigger service
    emit_event(event="charhub.backup.completed", resource={"prefect.resource.id": "charhub.database.charhub_db"},
               payload={"backup_id": backup_id, "database": "charhub_db", "repository": "s3://backups/pg"})
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            only_verify = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            runs = client.read_flow_runs(deployment_filter=only_verify)
            triggered = [r for r in runs if r.parameters.get("backup") == backup_id]
            if triggered or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert triggered, "no verify run was created by the event"
    assert triggered[0].parameters == {"backup": backup_id, "source_database": "charhub_db",
                                       "repository": "s3://backups/pg",
                                       "database_url_secret": "charhub-ops-scratch-url"}
