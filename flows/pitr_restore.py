"""Physical restores with pgBackRest: the weekly drill, a point-in-time restore, one table brought back (issue 19).

``pitr-verify`` — resolve → the drill (charhub_ops.pitr.verify: live snapshot of row counts and hashes, a
restore point, restore to it into a scratch instance, compare, remove the instance) under ``pitr-<stanza>`` →
artifact ``pitr-verify-report`` and ``charhub.pitr.verify.completed`` on ``charhub.pitr.<stanza>``; a mismatch
emits ``charhub.pitr.verify.failed`` with the verdict and fails the run; a drill that could not run (the
repository or the server unreachable, archiving stuck) emits the failed event with ``verdict: false`` — the
backup was not shown bad. Deployment ``pitr-verify``: Sundays 03:30 UTC.

``pitr-restore`` — resolve → plan (the target, the new directory or volume, the newest backup; artifact
``pitr-restore-plan``) → stop here with ``dry_run`` (the deployment's default) → on a production target the
approval pause of flows/approval.py (the plan in the form, answer recorded) → restore into the NEW place
(never the live data directory: charhub_ops.pitr.restore refuses it) → artifact ``pitr-restore-report``.

``pitr-recover-table`` — resolve → plan (the table's schema exists, the new name ``<table>_recovered_<time>`` is
free; artifact ``pitr-recover-plan``) → ``dry_run`` stops → production: approval → restore at the time into a
scratch instance and copy that one table into the live database as the new table (holding ``pitr-<stanza>``
and ``postgres-<db>``) → artifact ``pitr-recover-report``. Nothing else in the live database changes.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

from prefect import flow
from pydantic import Field

from charhub_ops.errors import ConfigError, OpsError, VerificationError
from charhub_ops.pitr.restore import Target
from charhub_ops.pitr.summary import resource_id
from flows.approval import approve
from flows.params import Access, DatabaseName, described
from flows.pitr import ACCESS_HELP, one_line
from flows.pitr_params import PitrTarget, TableName
from tasks.common import run_settings
from tasks.notify import emit, notify_failure
from tasks.pitr import (
    PitrConfig,
    pitr_artifact,
    pitr_info,
    pitr_restore,
    pitr_verify,
    plan_recover_table,
    recover_one_table,
    resolve_pitr_config,
)

__all__ = ["pitr_verify_flow", "pitr_restore_flow", "pitr_recover_table_flow", "VERIFIED", "VERIFY_FAILED"]

VERIFIED = "charhub.pitr.verify.completed"
VERIFY_FAILED = "charhub.pitr.verify.failed"
DRY_RUN_HELP = "Show the plan only (artifact); untick to act"


def _config(access: Access) -> PitrConfig:
    settings = run_settings(docker_container=access.docker_container)
    return resolve_pitr_config(settings, access.database_url_secret)


def _verify_markdown(cfg: PitrConfig, verdict: dict) -> str:
    v = verdict
    lines = [f"# pgBackRest restore drill of stanza `{cfg.stanza}`: {'ok' if v['ok'] else 'FAILED'}", "",
             f"Repository `{cfg.repository}`, database `{v['database']}`, newest backup `{v['backup_label']}`", "",
             "| restored to | tables | rows | content hashes | restore | total |", "|---|---|---|---|---|---|",
             f"| {v['target']} | {v['tables']} | {v['rows']} | {v['hashed_tables']} | {v['restore_seconds']:.0f} s "
             f"| {v['seconds']:.0f} s |"]
    if v["written_during_drill"]:
        lines += ["", "Written during the drill (not compared): " + ", ".join(v["written_during_drill"])]
    return "\n".join(lines + [""] + [f"- mismatch: {m}" for m in v["mismatches"][:50]])


@flow(name="pitr-verify", on_failure=[notify_failure])
@described
def pitr_verify_flow(
    access: Annotated[Access, Field(description=ACCESS_HELP + "; the drill compares with its database")] = Access(),
) -> dict:
    """Restore the cluster to a fresh restore point in a scratch instance and compare it with the live database."""
    cfg = _config(access)
    subject = resource_id(cfg.stanza)
    try:
        result = pitr_verify(cfg)
    except OpsError as exc:
        emit(VERIFY_FAILED, subject, {"stanza": cfg.stanza, "repository": cfg.repository, "ok": False,
                                      "verdict": False, "error": one_line(exc)})
        raise
    verdict = {**asdict(result), "mismatches": list(result.mismatches),
               "written_during_drill": list(result.written_during_drill)}
    pitr_artifact("pitr-verify-report", _verify_markdown(cfg, verdict), "charhub-ops pgBackRest restore drill")
    payload = {"stanza": cfg.stanza, "repository": cfg.repository, "verdict": True, **verdict,
               "mismatches": verdict["mismatches"][:20]}
    emit(VERIFIED if result.ok else VERIFY_FAILED, subject, payload)
    if not result.ok:
        raise VerificationError(f"pitr verify: {len(result.mismatches)} mismatch(es): "
                                + "; ".join(result.mismatches[:3]), details=verdict)
    return verdict


def restore_target(target: PitrTarget) -> Target:
    """The form's choice as a Target: a time, a restore point, else the latest (not both)."""
    if target.target_time and target.restore_point:
        raise ConfigError("target: give a time or a restore point, not both")
    if target.restore_point:
        return Target.point(target.restore_point)
    when = target.target_time
    return Target.at(when if when.tzinfo else when.replace(tzinfo=UTC)) if when else Target.latest()


def _into(cfg: PitrConfig, into: str | None, now: datetime) -> str:
    if into:
        return into
    if cfg.settings.database.docker_container:
        return f"charhub-pitr-restore-{now:%Y%m%d%H%M%S}"  # a new volume
    return f"{cfg.settings.pitr.pg_path.rstrip('/')}_restore_{now:%Y%m%d%H%M%S}"


@flow(name="pitr-restore", on_failure=[notify_failure])
@described
def pitr_restore_flow(
    target: Annotated[PitrTarget, Field(description="The point in time and the NEW place")] = PitrTarget(),
    dry_run: Annotated[bool, Field(description=DRY_RUN_HELP)] = True,
    access: Annotated[Access, Field(description=ACCESS_HELP)] = Access(),
) -> dict:
    """Restore the cluster at a point in time into a NEW data directory or volume; returns the plan (and result)."""
    cfg, now = _config(access), datetime.now(UTC)
    chosen, into = restore_target(target), _into(cfg, target.into, now)
    newest = pitr_info(cfg).newest
    if newest is None:
        raise ConfigError(f"pitr_repository: no backup of stanza {cfg.stanza} in {cfg.repository} to restore")
    place = "volume" if cfg.settings.database.docker_container else "data directory"
    plan = (f"Restore stanza `{cfg.stanza}` from `{cfg.repository}` (newest backup `{newest.label}`) to "
            f"**{chosen.describe()}** into the NEW {place} `{into}`; archive_mode is off in the copy; the live "
            f"cluster is not touched.")
    pitr_artifact("pitr-restore-plan", f"# pgBackRest restore plan\n\n{plan}\n", "charhub-ops pgBackRest restore plan")
    out = {"dry_run": dry_run, "target": chosen.describe(), "into": into, "newest_backup": newest.label}
    if dry_run:
        return out
    decision = approve(plan) if cfg.production else None
    result = pitr_restore(cfg, chosen, into)
    where = f"container `{result.container}`, volume `{result.into}`" if result.container else f"`{result.into}`"
    report = (f"# pgBackRest restore\n\nRestored to {result.target} into {where} in {result.seconds:.0f} s.\n\n"
              f"{decision.line() if decision else ''}\n")
    pitr_artifact("pitr-restore-report", report, "charhub-ops pgBackRest restore")
    return {**out, **asdict(result), "approval": decision.model_dump(mode="json") if decision else None}


@flow(name="pitr-recover-table", on_failure=[notify_failure])
@described
def pitr_recover_table_flow(
    table: Annotated[TableName, Field(description="The table as it was (name or schema.name, exact case), "
                                                  "e.g. CreditTransaction")],
    at: Annotated[datetime | None, Field(description="The moment before the bad DELETE or DROP TABLE (UTC)")] = None,
    dry_run: Annotated[bool, Field(description=DRY_RUN_HELP)] = True,
    database: Annotated[DatabaseName | None, Field(description="Its database; default: the database URL's")] = None,
    access: Annotated[Access, Field(description=ACCESS_HELP)] = Access(),
) -> dict:
    """Copy one table as it was at ``at`` into the live database as <table>_recovered_<time>; returns the plan
    (and the rows copied)."""
    cfg = _config(access)
    when = at if at is None or at.tzinfo else at.replace(tzinfo=UTC)
    plan = plan_recover_table(cfg, table, when, database)
    text = plan.describe()
    pitr_artifact("pitr-recover-plan", f"# Recover a table\n\nWill {text}.\n", "charhub-ops recover-table plan")
    out = {"dry_run": dry_run, "plan": text, "database": plan.database, "table": f"{plan.schema}.{plan.table}",
           "new_table": f"{plan.schema}.{plan.new_name}"}
    if dry_run:
        return out
    decision = approve(text) if cfg.production else None
    result = recover_one_table(cfg, plan)
    pitr_artifact("pitr-recover-report", f"# Recover a table\n\n{result.rows} rows ({result.columns} columns) of "
                  f"`{out['table']}` at {plan.target.describe()} are in `{out['new_table']}` ({result.seconds:.0f} s)."
                  f"\n\n{decision.line() if decision else ''}\n", "charhub-ops recover-table")
    return {**out, "rows": result.rows, "columns": result.columns, "seconds": result.seconds,
            "approval": decision.model_dump(mode="json") if decision else None}
