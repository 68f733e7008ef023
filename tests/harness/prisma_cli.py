"""The real Prisma CLI (``prisma migrate status``) against a real database, for the ledger's differential test.

The native schema engine is downloaded at run time from a host these machines cannot reach; Prisma 6.19 runs its
WebAssembly schema engine through the ``@prisma/adapter-pg`` driver adapter instead (FIELD-NOTES, "The real Prisma
CLI on these machines"). :func:`prisma_home` installs ``prisma``, the adapter and ``pg`` with npm once into a cache
directory outside the repository (``$XDG_CACHE_HOME/charhub-ops/prisma-<version>``, default ``~/.cache``); without
npm the fixture fails under CI (a skip would hide a broken harness) and skips locally with the reason.
:class:`PrismaProject` is a folder with ``prisma.config.js``, a schema whose datasource reads ``DATABASE_URL`` and
``prisma/migrations`` — the directory charhub-ops applies, so both tools read the same files and the same ledger.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

VERSION = "6.19.3"
PACKAGES = [f"prisma@{VERSION}", f"@prisma/adapter-pg@{VERSION}", "pg"]
CONFIG = """module.exports = {
  experimental: { adapter: true },
  engine: 'js',
  schema: './prisma/schema.prisma',
  adapter: async () => new (require(ADAPTER).PrismaPg)({ connectionString: process.env.DATABASE_URL,
                                                         allowExitOnIdle: true }),  // exits in 1 s, not 10
};
"""
SCHEMA = 'datasource db {\n  provider = "postgresql"\n  url      = env("DATABASE_URL")\n}\n'
NAME = re.compile(r"^\s*(\d{1,14}_\w+)\s*$")
DIAGNOSIS = re.compile(r'^\s*"diagnoseResult": (".*")\s*,?\s*$', re.MULTILINE)  # DEBUG=prisma:migrate:status
INSTALL_SECONDS: dict[str, float] = {}  # "cold" or "warm" → seconds, for the test's report


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "charhub-ops" / f"prisma-{VERSION}"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"real Prisma CLI: {reason}", pytrace=False)
    pytest.skip(f"real Prisma CLI: {reason}")


def install_prisma(target: Path) -> Path:
    """``target`` with node_modules/.bin/prisma: installed with npm into a temporary folder, renamed into place
    (an interrupted install never looks complete)."""
    started = time.monotonic()
    if (target / "node_modules" / ".bin" / "prisma").exists():
        INSTALL_SECONDS["warm"] = time.monotonic() - started
        return target
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm not found on PATH (CI installs it in .ci/run)")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(scratch), *PACKAGES],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        _unavailable(f"npm install {' '.join(PACKAGES)} failed: {(done.stderr or done.stdout)[-1500:]}")
    try:
        scratch.rename(target)
    except OSError:  # another session installed it meanwhile
        shutil.rmtree(scratch, ignore_errors=True)
    INSTALL_SECONDS["cold"] = time.monotonic() - started
    return target


@pytest.fixture(scope="session")
def prisma_home() -> Path:
    """The cached Prisma installation (installed on first use)."""
    return install_prisma(cache_dir())


@dataclass(frozen=True)
class PrismaStatus:
    """What ``prisma migrate status`` said: its exit code and the migration names under each heading."""

    returncode: int
    output: str
    failed: list[str]
    pending: list[str]
    missing: list[str]  # applied in the database, absent from the directory
    up_to_date: bool
    diagnosis: dict | None  # the schema engine's diagnoseMigrationHistory result, from the debug log

    @property
    def edited(self) -> list[str]:
        """Applied migrations whose file's checksum differs from the row's, by Prisma's own computation."""
        assert self.diagnosis is not None, "prisma printed no diagnoseMigrationHistory result:\n" + self.output
        return self.diagnosis["editedMigrationNames"]


def parse_status(returncode: int, output: str) -> PrismaStatus:
    """Collect the names listed under each of status's headings (singular or plural wording)."""
    sections: dict[str, list[str]] = {"failed": [], "pending": [], "missing": []}
    current: str | None = None
    for line in output.splitlines():
        if "have failed" in line or "has failed" in line:
            current = "failed"
        elif "not yet been applied" in line:
            current = "pending"
        elif "missing from the local migrations directory" in line:
            current = "missing"
        elif (match := NAME.match(line)) and current:
            sections[current].append(match.group(1))
        elif line.strip():
            current = None
    found = DIAGNOSIS.search(output)
    diagnosis = json.loads(json.loads(found.group(1))) if found else None
    return PrismaStatus(returncode, output, up_to_date="Database schema is up to date!" in output,
                        diagnosis=diagnosis, **sections)


class PrismaProject:
    """A Prisma project folder whose ``prisma/migrations`` both tools read."""

    def __init__(self, home: Path, root: Path):
        self.home, self.root = home, root
        (root / "prisma").mkdir(parents=True, exist_ok=True)
        adapter = home / "node_modules" / "@prisma" / "adapter-pg"  # the cache, not the project's node_modules
        (root / "prisma.config.js").write_text(f"const ADAPTER = {json.dumps(str(adapter))};\n" + CONFIG)
        (root / "prisma" / "schema.prisma").write_text(SCHEMA)
        (root / "no-query-engine.node").write_bytes(b"")  # Prisma only checks that the file exists

    @property
    def migrations(self) -> Path:
        return self.root / "prisma" / "migrations"

    def status(self, database_url: str) -> PrismaStatus:
        env = {**os.environ, "DATABASE_URL": database_url,
               "PRISMA_QUERY_ENGINE_LIBRARY": str(self.root / "no-query-engine.node"),
               "PRISMA_SCHEMA_ENGINE_BINARY": "/bin/false", "PRISMA_ENGINES_CHECKSUM_IGNORE_MISSING": "1",
               "PRISMA_HIDE_UPDATE_MESSAGE": "1", "CHECKPOINT_DISABLE": "1",
               "DEBUG": "prisma:migrate:status"}
        done = subprocess.run([str(self.home / "node_modules" / ".bin" / "prisma"), "migrate", "status"],
                              cwd=self.root, env=env, capture_output=True, text=True, timeout=120)
        return parse_status(done.returncode, done.stdout + done.stderr)
