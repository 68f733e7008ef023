"""Event chaining on a real Prefect server: charhub.backup.completed starts the restore drill and prune."""

from __future__ import annotations

import time
import uuid

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.events import emit_event


def test_backup_completed_event_starts_verify_and_prune_with_the_event_parameters(prefect_server):
    from deployments.serve import load_deployments

    chained = {d.name: d.apply() for d in load_deployments() if d.name in ("verify-after-backup", "prune-after-backup")}
    backup_id = f"20261126T023000Z-{uuid.uuid4().hex[:4]}"
    time.sleep(1)  # the automation is loaded by the trigger service
    emit_event(event="charhub.backup.completed", resource={"prefect.resource.id": "charhub.database.charhub_db"},
               payload={"backup_id": backup_id, "database": "charhub_db", "repository": "s3://backups/pg"})
    verify = _wait_for_run(chained["verify-after-backup"], lambda p: p.get("source", {}).get("backup") == backup_id)
    assert verify.parameters == {"repository": "s3://backups/pg",
                                 "source": {"backup": backup_id, "source_database": "charhub_db"},
                                 "access": {"database_url_secret": "charhub-ops-scratch-url"}}
    prune = _wait_for_run(chained["prune-after-backup"], lambda p: p.get("repository") == "s3://backups/pg")
    assert prune.parameters == {"repository": "s3://backups/pg", "database": "charhub_db"}


def _wait_for_run(deployment_id, wanted):
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            only = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            runs = [r for r in client.read_flow_runs(deployment_filter=only) if wanted(r.parameters)]
            if runs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert runs, f"no run of deployment {deployment_id} was created by the event"
    return runs[0]
