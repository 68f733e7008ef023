"""The plan of a migration run, computed from the migration directory and Prisma's ledger rows. Pure.

Prisma's rules (schema-engine ``apply_migrations.rs``, ``checksum.rs``):

* a migration is **applied** when it has a row with ``finished_at`` set and ``rolled_back_at`` unset;
* it has **failed** when a row has neither (deploy refuses to run: P3009) — until ``migrate resolve``;
* a rolled-back row does not count: that migration is **pending** again;
* pending migrations run in directory-name order;
* an applied migration whose file changed, or is gone, is **drift** (the checksum matches across
  CRLF↔LF line endings, and old rows without zero-padded hex digits still match, as in Prisma).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["MigrationFile", "LedgerRow", "Drift", "Plan", "make_plan", "checksum", "accepted_checksums",
           "blocking_reason", "plan_changes"]


def checksum(data: bytes) -> str:
    """Prisma's checksum of a migration.sql: lowercase hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def accepted_checksums(data: bytes) -> frozenset[str]:
    """Every checksum Prisma accepts for this file: as is, CRLF→LF, LF→CRLF; each zero-padded or not."""
    variants = {data, data.replace(b"\r\n", b"\n"), data.replace(b"\n", b"\r\n")}
    digests = [hashlib.sha256(v).digest() for v in variants]
    return frozenset({d.hex() for d in digests} | {"".join(f"{b:x}" for b in d) for d in digests})


@dataclass(frozen=True)
class MigrationFile:
    """One ``<name>/migration.sql``: its checksum, the checksums that still match it, CONCURRENTLY or not."""

    name: str
    checksum: str
    accepted: frozenset[str] = frozenset()
    concurrent: bool = False

    def matches(self, recorded: str) -> bool:
        return recorded == self.checksum or recorded in self.accepted


@dataclass(frozen=True)
class LedgerRow:
    """One row of ``_prisma_migrations``."""

    id: str
    checksum: str
    migration_name: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rolled_back_at: datetime | None = None
    logs: str | None = None
    applied_steps_count: int = 0

    @property
    def failed(self) -> bool:
        return self.finished_at is None and self.rolled_back_at is None

    @property
    def applied(self) -> bool:
        return self.finished_at is not None and self.rolled_back_at is None


@dataclass(frozen=True)
class Drift:
    name: str
    reason: str  # "changed" (checksum differs) or "missing" (no file)


@dataclass(frozen=True)
class Plan:
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    drift: list[Drift] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)  # failed migration → its error

    def as_dict(self) -> dict:
        return {"applied": self.applied, "pending": self.pending, "failed": self.failed,
                "drift": [{"migration": d.name, "reason": d.reason} for d in self.drift]}


def make_plan(files: list[MigrationFile], rows: list[LedgerRow]) -> Plan:
    """Applied (in the ledger's order), pending (name order), failed, drift."""
    by_name = {f.name: f for f in files}
    applied: dict[str, LedgerRow] = {}
    failed: dict[str, LedgerRow] = {}
    for row in sorted(rows, key=lambda r: (r.started_at is None, r.started_at or datetime.min, r.migration_name)):
        if row.applied:
            applied.setdefault(row.migration_name, row)
        elif row.failed:
            failed[row.migration_name] = row
    drift = []
    for name, row in applied.items():
        file = by_name.get(name)
        if file is None:
            drift.append(Drift(name, "missing"))
        elif not file.matches(row.checksum):
            drift.append(Drift(name, "changed"))
    pending = sorted(n for n in by_name if n not in applied and n not in failed)
    return Plan(applied=list(applied), pending=pending, failed=sorted(failed), drift=drift,
                logs={n: r.logs or "" for n, r in failed.items()})


def blocking_reason(plan: Plan, allow_drift: bool) -> str | None:
    """Why a run must not apply anything (failed migration, drift without ``allow_drift``), or None."""
    if plan.failed:
        name = plan.failed[0]
        return (f"migration {name} failed earlier and is not resolved (Prisma P3009): fix it, then either "
                f"`charhub-ops migrate resolve --rolled-back {name}` to run it again, or "
                f"`charhub-ops migrate resolve --applied {name}` if you completed it by hand")
    if plan.drift and not allow_drift:
        listed = ", ".join(f"{d.name} ({d.reason})" for d in plan.drift)
        return (f"drift: applied migrations differ from the files on disk: {listed}; restore the files, "
                f"or pass --allow-drift to run anyway (recorded)")
    return None


def plan_changes(planned: dict[str, str], files: list[MigrationFile], pending: list[str]) -> list[str]:
    """How the directory and the ledger now differ from ``planned`` ({name: checksum} of the pending migrations
    that were linted and previewed): ``name (changed|gone|no longer pending|new)``; [] when they agree."""
    by_name = {f.name: f for f in files}
    changes = []
    for name, recorded in planned.items():
        file = by_name.get(name)
        if file is None:
            changes.append(f"{name} (gone)")
        elif file.checksum != recorded:
            changes.append(f"{name} (changed)")
        elif name not in pending:
            changes.append(f"{name} (no longer pending: applied or failed meanwhile)")
    return changes + [f"{name} (new)" for name in pending if name not in planned]
