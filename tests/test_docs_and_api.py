"""The README keeps its two commands, and the public API of core is pinned (the settings' documentation:
tests/test_settings_groups.py)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_has_the_two_commands():
    assert "uv run charhub-ops backup" in README
    assert "bash scripts/test.sh" in README
    assert "bash scripts/test.sh" in (Path(__file__).resolve().parent.parent / ".ci/run").read_text()


@pytest.mark.parametrize(("module", "names"), [
    ("charhub_ops.errors", {"OpsError", "ConfigError", "StorageError", "NotFoundError", "DatabaseError",
                            "DockerError", "VerificationError", "PolicyError"}),
    ("charhub_ops.storage", {"Storage", "ObjectInfo", "PutResult", "DeleteResult", "ExactReader",
                             "choose_part_size", "LocalStorage", "MemoryStorage", "S3Storage", "S3Options",
                             "open_storage"}),
    ("charhub_ops.backup.engine", {"Preflight", "DumpResult", "preflight", "dump_database", "dump_globals",
                                   "build_manifest", "write_manifest", "make_tools", "open_session",
                                   "choose_local_pg_dump"}),
    ("charhub_ops.cli", {"app", "main"}),
    ("charhub_ops.retention.options", {"KEEP_FIELDS", "SETTINGS_FIELDS", "PolicyChoice", "choose_policy",
                                       "describe_policy"}),
    ("charhub_ops.backup.catalog", {"list_backups", "list_backups_verified", "latest_backup", "load_manifest",
                                    "backup_summary", "size_anomaly", "write_verification"}),
])
def test_public_api_is_pinned(module, names):
    mod = importlib.import_module(module)
    assert set(mod.__all__) == names
    assert all(hasattr(mod, n) for n in names)


def test_core_never_imports_prefect():
    import subprocess
    import sys

    code = ("import sys, charhub_ops.backup.engine, charhub_ops.backup.catalog, charhub_ops.retention.prune, "
            "charhub_ops.retention.options, charhub_ops.restore.datapath, charhub_ops.restore.swap, "
            "charhub_ops.storage, charhub_ops.settings, charhub_ops.cli; print('prefect' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
