#!/usr/bin/env bash
# Installs the project and runs the whole test suite against real services:
# PostgreSQL clusters and an S3 server are started by the tests themselves (tests/harness),
# the Docker engine is started here when it is installed but not running.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
uv sync --frozen --quiet

if command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  echo "starting the Docker engine (vfs storage driver)"
  setsid dockerd --storage-driver=vfs >/tmp/charhub-ops-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/charhub-ops-dockerd.log" >&2; exit 1; }
fi

exec uv run --frozen python -m pytest "$@"
