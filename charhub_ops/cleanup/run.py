"""Row retention end to end, without Prefect: check every policy, then count (dry run) or delete + vacuum.

:func:`plan_policies` checks the whole file against the catalog before anything runs (one bad policy
stops the run with an error naming it); :func:`run_policies` counts exactly, and unless ``dry_run``
deletes in batches and vacuums the tables it touched. :func:`rows_to_json` is the ``--json`` shape.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from charhub_ops.cleanup.policy import PolicyFile, TablePlan, check_policy
from charhub_ops.cleanup.rows import PolicyResult, RowOptions, count_matching, delete_expired, vacuum_analyze
from charhub_ops.cleanup.schema import table_shape

__all__ = ["plan_policies", "run_policy", "run_policies", "rows_to_json", "plan_to_json"]


def plan_policies(conn: psycopg.Connection, policies: PolicyFile) -> list[TablePlan]:
    """Every policy checked against the live catalog; raises PolicyError naming the first bad one."""
    protected = policies.protected()
    return [check_policy(p, table_shape(conn, p.schema_name, p.table), protected) for p in policies.policies]


def run_policy(conn: psycopg.Connection, plan: TablePlan, now: datetime, opts: RowOptions,
               dry_run: bool) -> PolicyResult:
    """One policy: the exact count, then (unless ``dry_run``) the batched delete and VACUUM (ANALYZE)."""
    cutoff = plan.policy.older_than.before(now)
    matched = count_matching(conn, plan, cutoff)
    if dry_run:
        return PolicyResult(table=plan.policy.name, cutoff=cutoff, matched=matched, batch_size=plan.policy.batch_size)
    result = delete_expired(conn, plan, cutoff, opts, matched)
    if result.deleted:
        vacuum_analyze(conn, plan.policy)
    return result


def run_policies(conn: psycopg.Connection, plans: list[TablePlan], now: datetime, opts: RowOptions,
                 dry_run: bool) -> list[PolicyResult]:
    return [run_policy(conn, plan, now, opts, dry_run) for plan in plans]


def plan_to_json(plan: TablePlan, now: datetime) -> dict:
    p = plan.policy
    return {"table": p.name, "timestamp_column": p.timestamp_column, "older_than": str(p.older_than),
            "cutoff": p.older_than.before(now).isoformat(), "where": p.where, "batch_size": p.batch_size,
            "max_rows": p.max_rows, "max_seconds": p.max_seconds, "key": plan.key, "cascades": plan.cascades,
            "restricts": plan.restricts, "index_warning": plan.index_warning,
            "reference_warning": plan.reference_warning, "estimated_rows": plan.estimated_rows}


def rows_to_json(plans: list[TablePlan], results: list[PolicyResult], now: datetime, dry_run: bool) -> dict:
    """``{"dry_run", "policies": [{table, matched, deleted, batches, ...}]}`` (the CLI's ``--json``)."""
    policies = []
    for plan, result in zip(plans, results, strict=True):
        would = min(result.matched, plan.policy.max_rows or result.matched)
        policies.append({**plan_to_json(plan, now), **result.model_dump(mode="json"),
                         "would_delete": would if dry_run else None})
    return {"dry_run": dry_run, "now": now.isoformat(), "policies": policies}
