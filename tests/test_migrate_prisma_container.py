"""``migrate --prisma-container``: the app's own ``npx prisma migrate deploy`` runs in its container through the
Docker API. The container is a busybox stand-in for CharHub's backend whose ``npx`` is a shell script writing
``_prisma_migrations`` the way Prisma does (psql from the host's PostgreSQL binaries, host network)."""

from __future__ import annotations

import json
import os
import uuid

import psycopg
import pytest
from typer.testing import CliRunner

from charhub_ops.cli import app
from tests.harness.docker_pg import (
    _READ_ONLY_MOUNTS,
    ensure_busybox_image,
    postgres_major_version,
    require_docker,
    stop,
)
from tests.harness.migrations import CHARHUB, write_migrations

# A stand-in for `npx prisma migrate deploy`: Prisma's table, its P3009 refusal, one row per migration inserted
# before it runs (sha256 checksum), the file in one transaction, finished_at + applied_steps_count or logs.
NPX = r"""#!/bin/sh
[ "$*" = "prisma migrate deploy" ] || { echo "unexpected: npx $*" >&2; exit 2; }
P="psql -X -q -A -t -v ON_ERROR_STOP=1 -d $DATABASE_URL"
$P -c 'CREATE TABLE IF NOT EXISTS "_prisma_migrations" ("id" VARCHAR(36) PRIMARY KEY NOT NULL,
 "checksum" VARCHAR(64) NOT NULL, "finished_at" TIMESTAMPTZ, "migration_name" VARCHAR(255) NOT NULL, "logs" TEXT,
 "rolled_back_at" TIMESTAMPTZ, "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
 "applied_steps_count" INTEGER NOT NULL DEFAULT 0)' || exit 1
if [ "$($P -c 'SELECT count(*) FROM _prisma_migrations WHERE finished_at IS NULL AND rolled_back_at IS NULL')" != 0 ]
then echo "Error: P3009 migrate found failed migrations" >&2; exit 1; fi
for dir in /app/prisma/migrations/*/; do
  name=$(basename "$dir")
  done=$($P -c "SELECT count(*) FROM _prisma_migrations WHERE migration_name = '$name' AND rolled_back_at IS NULL")
  [ "$done" = 0 ] || continue
  id=$(cat /proc/sys/kernel/random/uuid)
  sum=$(sha256sum "$dir/migration.sql" | cut -d' ' -f1)
  $P -c "INSERT INTO _prisma_migrations (id, checksum, migration_name) VALUES ('$id', '$sum', '$name')"
  if out=$($P -1 -f "$dir/migration.sql" 2>&1); then
    $P -c "UPDATE _prisma_migrations SET applied_steps_count = applied_steps_count + 1, finished_at = now()
           WHERE id = '$id'"
    echo "Applying migration \`$name\`"
  else
    echo "UPDATE _prisma_migrations SET logs = :'logs' WHERE id = '$id'" | $P -v logs="$out"
    echo "Error: P3018 A migration failed to apply. Migration name: $name. $out" >&2
    exit 1
  fi
done
echo "All migrations have been successfully applied."
"""


@pytest.fixture
def backend(database, tmp_path, monkeypatch):
    """The stand-in backend container (host network) with /app/prisma/migrations and /app/bin/npx bound in."""
    client = require_docker()
    appdir = tmp_path / "app"
    (appdir / "bin").mkdir(parents=True)
    (appdir / "bin" / "npx").write_text(NPX)
    (appdir / "bin" / "npx").chmod(0o755)
    migrations = write_migrations(appdir / "prisma" / "migrations", CHARHUB)
    for path in (tmp_path, appdir, appdir / "prisma", migrations):
        path.chmod(0o755)
    name = f"charhub-ops-test-backend-{uuid.uuid4().hex[:8]}"
    major = postgres_major_version()
    mounts = {p: {"bind": p, "mode": "ro"} for p in _READ_ONLY_MOUNTS if os.path.exists(p)}
    client.containers.run(
        ensure_busybox_image(client), ["sleep", "infinity"], name=name, detach=True, init=True, network_mode="host",
        volumes={**mounts, str(appdir): {"bind": "/app", "mode": "ro"}}, labels={"charhub-ops-test": "backend"},
        environment={"PATH": f"/app/bin:/usr/lib/postgresql/{major}/bin:/bin", "DATABASE_URL": database})
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", database)
    monkeypatch.setenv("CHARHUB_OPS_MIGRATE_LOCK_WAIT", "2")
    yield name, migrations
    stop(client, name)
    client.close()


def migrate(*args: str):
    return CliRunner().invoke(app, ["migrate", *args])


def test_prisma_container_applies_with_prismas_rows(prefect_server, backend, database):
    name, migrations = backend
    result = migrate("--migrations", str(migrations), "--no-backup", "--prisma-container", name, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["applied"] == sorted(CHARHUB) and summary["outcome"] == "applied"
    status = json.loads(migrate("status", "--migrations", str(migrations), "--json").stdout)
    assert status == {"applied": sorted(CHARHUB), "pending": [], "failed": [], "drift": [], "failed_logs": {}}
    with psycopg.connect(database) as conn:
        assert conn.execute('SELECT count(*) FROM "UsageLog"').fetchone() == (0,)
        (history,) = conn.execute("SELECT outcome, applied FROM charhub_ops.migration_runs").fetchall()
    assert history == ("applied", sorted(CHARHUB))


def test_prisma_container_failure_is_reported_from_the_ledger(prefect_server, backend, database):
    name, migrations = backend
    (migrations / "20250401000000_bad").mkdir()
    (migrations / "20250401000000_bad" / "migration.sql").write_text('ALTER TABLE "Nope" ADD COLUMN "x" TEXT;\n')
    result = migrate("--migrations", str(migrations), "--no-backup", "--prisma-container", name, "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["applied"] == sorted(CHARHUB) and summary["failed"] == ["20250401000000_bad"]
    assert "P3018" in summary["error"] and '"Nope" does not exist' in summary["error"]
    with psycopg.connect(database) as conn:
        (logs,) = conn.execute("SELECT logs FROM _prisma_migrations WHERE finished_at IS NULL").fetchone()
    assert '"Nope" does not exist' in logs


def test_missing_container_is_one_clear_error(prefect_server, database, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARHUB_OPS_DATABASE_URL", database)
    migrations = write_migrations(tmp_path / "m", CHARHUB)
    result = migrate("--migrations", str(migrations), "--no-backup", "--prisma-container", "no-such-backend")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no-such-backend" in errors[0]
