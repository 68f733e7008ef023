"""The fixed cost of a backup run (issue 18, item 6): what a tiny backup pays that its data does not need.

Behaviour, not timings (timings are bench/run_overhead.py's): boto3 is imported only for an ``s3://``
repository, every S3 client of a process shares one copy of botocore's service models, the progress artifact
is created only once a dump has run long enough to show progress, the previous backup of a single database is
read while preflight runs, and the CLI keeps the garbage collector off Prefect's modules: imported with it paused
and frozen, and everything frozen again when the command is done (the interpreter's exit then skips collecting).
"""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest


def test_a_local_backup_does_not_import_boto3(tmp_path):
    """The CLI command, the flow and a file:// repository: boto3 (~0.1-0.3 s of CPU) is not imported."""
    code = ("import sys, charhub_ops.cli.backup, flows.backup\n"
            "from charhub_ops.storage import open_storage\n"
            f"open_storage('file://{tmp_path}/repo').put_bytes('x', b'1')\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 's3transfer'))\n"
            "assert not loaded, loaded\n"
            "from charhub_ops.storage import S3Storage\n"  # the name still resolves, on first use
            "assert S3Storage.__module__ == 'charhub_ops.storage.s3' and 'boto3' in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_s3_clients_share_one_copy_of_the_service_models(monkeypatch):
    """Each client keeps its own credentials and endpoint; botocore's models are loaded once per process."""
    from pydantic import SecretStr

    from charhub_ops.storage.s3 import S3Options, make_s3_client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    a = make_s3_client(S3Options(endpoint_url="http://127.0.0.1:9"))
    b = make_s3_client(S3Options(endpoint_url="http://127.0.0.2:9", region="auto",
                                 access_key_id=SecretStr("k2"), secret_access_key=SecretStr("s2")))
    c = make_s3_client(S3Options())
    assert a._loader is b._loader is c._loader
    paths = a._loader.search_paths
    assert len(paths) == len(set(paths)), paths  # boto3 adds its data path per session: not once per client
    assert (a.meta.endpoint_url, b.meta.endpoint_url) == ("http://127.0.0.1:9", "http://127.0.0.2:9")
    assert (a.meta.region_name, b.meta.region_name) == ("us-east-1", "auto")
    assert a._request_signer._credentials.access_key == "env-key"
    assert b._request_signer._credentials.access_key == "k2"


def test_progress_artifact_only_once_a_dump_runs_long_enough(prefect_server):
    """No artifact (no API call) for a dump shorter than the update interval; created at the first update, for
    the task run, from the thread that streams (no run context there), and set to 100 % at the end."""
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    from tasks.backup import _ProgressSink

    now = [0.0]

    @task
    def dump(total_seconds: float) -> str:
        import threading

        sink = _ProgressSink("db", 1000, every=2.0, clock=lambda: now[0])

        def stream() -> None:
            for _ in range(10):
                now[0] += total_seconds / 10
                sink(100)

        thread = threading.Thread(target=stream)
        thread.start()
        thread.join()
        sink.finish()
        return str(sink.run_ids[0])

    @flow
    def backups() -> tuple[str, str, str]:
        from prefect.runtime import flow_run

        return flow_run.id, dump(1.5), dump(10.0)

    run_id, _, long_task = backups()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            type=ArtifactFilterType(any_=["progress"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    assert [(str(a.task_run_id), a.data, a.description) for a in found] == [(long_task, 100.0, "Backing up db")]


def test_cli_freezes_what_it_imported_when_the_command_is_done(monkeypatch):
    from charhub_ops.cli import main

    gc.unfreeze()
    monkeypatch.setattr(sys, "argv", ["charhub-ops", "--help"])
    try:
        with pytest.raises(SystemExit):
            main()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_prefect_is_imported_frozen_once_per_process():
    """The CLI imports Prefect with the collector paused and freezes it: later collections skip those objects."""
    code = ("import gc, sys\n"
            "from charhub_ops.cli.app import prepare_prefect\n"
            "prepare_prefect()\n"
            "frozen = gc.get_freeze_count()\n"
            "assert 'prefect.flows' in sys.modules and 'prefect.tasks' in sys.modules\n"
            "assert gc.isenabled() and frozen > 100_000, frozen\n"
            "prepare_prefect()\n"
            "assert gc.get_freeze_count() == frozen, 'frozen again'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
