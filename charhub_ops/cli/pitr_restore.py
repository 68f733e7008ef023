"""`charhub-ops pitr restore | verify | recover-table`, added to the core's ``pitr`` group (charhub_ops.cli.pitr).

``restore`` writes only into a NEW data directory (or, with the database in a container, a new container and
volume): never into the live cluster, with or without approval — putting a restored copy in place of the
live one is an operator's step, done with the database stopped (docs/pipelines/pitr.md).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from charhub_ops.cli.app import JsonOpt, err, print_json, run_guarded, run_verdict
from charhub_ops.cli.pitr import app, connect_from_settings
from charhub_ops.cli.restore import parse_time
from charhub_ops.errors import ConfigError, VerificationError

__all__ = ["restore", "verify", "recover_table", "choose_target"]

IntoOpt = Annotated[str, typer.Option(
    "--into", help="A NEW empty data directory (database on this host) or a new volume name (database in a "
                   "container). Never the live one.")]


def choose_target(target_time: str | None, latest: bool, restore_point: str | None):
    """Exactly one of --target-time, --latest, --restore-point → a Target; ConfigError naming them."""
    from charhub_ops.pitr.restore import Target

    given = [name for name, value in (("--target-time", target_time), ("--latest", latest),
                                      ("--restore-point", restore_point)) if value]
    if len(given) != 1:
        raise ConfigError("--target-time / --latest / --restore-point: give exactly one "
                          f"({', '.join(given) or 'none'} given)")
    if latest:
        return Target.latest()
    if restore_point:
        return Target.point(restore_point)
    return Target.at(parse_time(target_time, "--target-time"))


def _live_url(pitr):
    from charhub_ops.pgurl import parse_pg_url

    url = pitr.settings.database.database_url
    if url is None:
        raise ConfigError("database_url: not set (CHARHUB_OPS_DATABASE_URL or DATABASE_URL)")
    return parse_pg_url(url.get_secret_value())


@app.command()
def restore(
    into: IntoOpt,
    target_time: Annotated[str | None, typer.Option(
        "--target-time",
        help="Recover up to this time (ISO 8601; naive = UTC), commits at that time included.")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Recover every archived WAL (the newest state).")] = False,
    restore_point: Annotated[str | None, typer.Option(
        "--restore-point", help="Recover to a named restore point (pg_create_restore_point).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore the cluster at a point in time into a NEW data directory (never the live one); archiving is off
    in the copy, so it never writes into the repository."""
    from charhub_ops.pitr.restore import restore_into

    def run():
        target = choose_target(target_time, latest, restore_point)
        return restore_into(connect_from_settings().pgb, target, into)

    result = run_guarded(run)
    if as_json:
        print_json(asdict(result))
        return
    where = f"container {result.container}, volume {result.into}" if result.container else result.into
    err.print(f"[green]✓[/] restored ({result.target}) into {where} in {result.seconds:.1f} s; archive_mode is off "
              "there. Start it on another port to use it.", highlight=False, soft_wrap=True)


@app.command()
def verify(as_json: JsonOpt = False) -> None:
    """Restore drill: snapshot the live tables, make a restore point, restore to it into a scratch instance,
    compare row counts and content hashes, remove the instance. Exit 1 on a mismatch."""
    from charhub_ops.pitr.verify import verify as drill

    def run():
        pitr = connect_from_settings()
        s = pitr.settings
        result = drill(pitr.pgb, _live_url(pitr), hash_limit_bytes=s.backup.hash_limit_mib << 20,
                       work_dir=s.runs.work_dir)
        if not result.ok:
            raise VerificationError(f"pitr verify: {len(result.mismatches)} mismatch(es): "
                                    + "; ".join(result.mismatches[:3]), details=asdict(result))
        return result

    result = run_verdict(run, as_json)
    if as_json:
        print_json(asdict(result))
        return
    written = f"; written during the drill (not compared): {', '.join(result.written_during_drill)}" \
        if result.written_during_drill else ""
    err.print(f"[green]✓[/] restore to {result.restore_point} verified: {result.tables} tables, {result.rows} rows, "
              f"{result.hashed_tables} content hashes match{written} ({result.seconds:.0f} s)",
              highlight=False, soft_wrap=True)


@app.command("recover-table")
def recover_table(
    table: Annotated[str, typer.Option("--table", help="The table (name or schema.name, exact case).")],
    at: Annotated[str, typer.Option("--at", help="Its state at this time (ISO 8601; naive = UTC).")],
    database: Annotated[str | None, typer.Option(
        "--database", help="Its database (default: database_url's).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be done; do nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy one table as it was at --at back into the live database as <table>_recovered_<time>, touching
    nothing else (the cluster is restored into a scratch instance, removed afterwards)."""
    from charhub_ops.pitr.recover import plan_recovery
    from charhub_ops.pitr.recover import recover_table as recover
    from charhub_ops.postgres import open_session

    def plan():
        pitr = connect_from_settings()
        url = _live_url(pitr)
        url = url.with_dbname(database) if database else url
        with open_session(url, pitr.pgb.container) as session:
            return pitr, url, plan_recovery(session, table, parse_time(at, "--at"), url.dbname)

    pitr, url, the_plan = run_guarded(plan)
    err.print(("would " if dry_run else "will ") + the_plan.describe(), highlight=False, soft_wrap=True)
    if dry_run:
        if as_json:
            print_json({"dry_run": True, **asdict(the_plan)})
        return
    result = run_guarded(lambda: recover(pitr.pgb, the_plan, url, work_dir=pitr.settings.runs.work_dir))
    if as_json:
        print_json({"dry_run": False, **asdict(result)})
        return
    err.print(f"[green]✓[/] {result.rows} rows ({result.columns} columns) of {the_plan.schema}.{the_plan.table} at "
              f"{the_plan.target.describe()} are in {the_plan.schema}.{the_plan.new_name} ({result.seconds:.0f} s)",
              highlight=False, soft_wrap=True)
