"""The README keeps its two commands, and the public API of core is pinned (the settings' documentation:
tests/test_settings_groups.py)."""

from __future__ import annotations

import ast
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


# The layers, bottom to top: core (charhub_ops, cli aside) → tasks → flows → deployments, with the CLI on
# top of core, flows and deployments. Each layer's forbidden top-level imports (AST: nothing is executed).
_SYSTEMS = {"boto3", "botocore", "psycopg", "docker"}
LAYERS = {
    "core": {"prefect", "tasks", "flows", "deployments"},
    "cli": {"tasks"},
    "tasks": _SYSTEMS | {"flows", "deployments"},
    "flows": _SYSTEMS | {"deployments"},
    "deployments": _SYSTEMS,
}
ROOT = Path(__file__).resolve().parent.parent


def layer_of(rel: str) -> str | None:
    """The layer of a file by its path from the repository root (None: not layered, e.g. tests, bench)."""
    if rel.startswith("charhub_ops/cli/"):
        return "cli"
    if rel.startswith("charhub_ops/"):
        return "core"
    top = rel.split("/", 1)[0]
    return top if top in LAYERS and "/" in rel else None


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source`` — top level, in functions, under TYPE_CHECKING — and of
    ``importlib.import_module("…")`` / ``__import__("…")`` with a literal name. Relative imports stay in
    their own package and are skipped."""
    found, loaders = [], ("import_module", "__import__")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in loaders):
            found.append((node.lineno, node.args[0].value))
    return found


def layer_violations(rel: str, source: str) -> list[str]:
    """``file:line imports module`` for every import ``rel``'s layer forbids."""
    forbidden = LAYERS.get(layer_of(rel) or "", set())
    return [f"{rel}:{line} imports {module}" for line, module in imported_modules(source)
            if module.split(".")[0] in forbidden]


@pytest.mark.parametrize(("rel", "source", "expected"), [
    ("charhub_ops/x.py", "import prefect", ["charhub_ops/x.py:1 imports prefect"]),
    ("charhub_ops/m/x.py", "def f():\n    from tasks.monitor import probe",
     ["charhub_ops/m/x.py:2 imports tasks.monitor"]),
    ("charhub_ops/x.py", "import importlib\nimportlib.import_module('flows.backup')",
     ["charhub_ops/x.py:2 imports flows.backup"]),
    ("charhub_ops/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import deployments.setup",
     ["charhub_ops/x.py:3 imports deployments.setup"]),
    ("charhub_ops/cli/x.py", "import prefect\nfrom flows.monitor import monitor_flow\nimport tasks.monitor",
     ["charhub_ops/cli/x.py:3 imports tasks.monitor"]),
    ("tasks/x.py", "import boto3, json\nfrom botocore.config import Config\nfrom flows import params",
     ["tasks/x.py:1 imports boto3", "tasks/x.py:2 imports botocore.config", "tasks/x.py:3 imports flows"]),
    ("flows/x.py", "from psycopg import sql\nimport deployments.setup\nfrom tasks.monitor import probe",
     ["flows/x.py:1 imports psycopg", "flows/x.py:2 imports deployments.setup"]),
    ("deployments/x.py", "def f():\n    import docker\nfrom flows.backup import backup_flow",
     ["deployments/x.py:2 imports docker"]),
    ("charhub_ops/x.py", "from . import errors\nimport dockerfile\nfrom charhub_ops.docker_exec import run", []),
    ("tests/x.py", "import prefect, docker, tasks", []),
])
def test_the_layer_checker_finds_forbidden_imports(rel, source, expected):
    assert layer_violations(rel, source) == expected


def test_every_module_keeps_to_its_layer():
    """core (charhub_ops, cli aside) imports no prefect, tasks, flows, deployments; tasks, flows and deployments
    import no boto3, botocore, psycopg, docker (they go through core); the CLI no tasks (it goes through flows
    and deployments); tasks no flows or deployments; flows no deployments."""
    files = [p for top in ("charhub_ops", "tasks", "flows", "deployments") for p in sorted((ROOT / top).rglob("*.py"))]
    assert len(files) > 50
    found = [v for p in files for v in layer_violations(p.relative_to(ROOT).as_posix(), p.read_text())]
    assert not found, "imports across the layers:\n" + "\n".join(found)
