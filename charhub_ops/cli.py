"""The ``charhub-ops`` command line. It parses options and calls core code or a flow; nothing else.

Every expected error (an ``OpsError``) becomes one red line on stderr and exit code 1, without a
traceback. Secrets passed as options go to the process environment, never into flow parameters.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from charhub_ops.errors import OpsError

__all__ = ["app", "main"]

app = typer.Typer(name="charhub-ops", help="CharHub operations: backups to R2, retention, restores.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
backups_app = typer.Typer(help="Inspect and prune the backups of a repository.", no_args_is_help=True)
app.add_typer(backups_app, name="backups")
err = Console(stderr=True)

RepoOpt = Annotated[str | None, typer.Option("--from", help="Repository: s3://bucket/prefix or file:///path "
                                                            "(default: CHARHUB_OPS_REPOSITORY, then ./backups)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def run_guarded(func: Callable[[], Any]) -> Any:
    """Run ``func``; an OpsError becomes one clear line and exit code 1."""
    try:
        return func()
    except OpsError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class _NoOpsTracebacks(logging.Filter):
    """Keeps expected errors readable in the CLI: the message stays, the traceback goes (logger
    filters, so they hold whatever handlers Prefect configures later)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], OpsError):
            record.exc_info, record.exc_text = None, None
        return True


def _prepare_prefect() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LOG_PRINTS", "false")
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine",
                 "prefect.task_engine", "prefect.engine"):
        logging.getLogger(name).addFilter(_NoOpsTracebacks())


def _progress_bar(enabled: bool):
    """A Rich progress bar fed by charhub_ops.progress; a no-op context when stderr is not a TTY."""
    from contextlib import contextmanager, nullcontext

    if not enabled or not err.is_terminal:
        return nullcontext()
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from charhub_ops import progress

    @contextmanager
    def bar():
        tasks: dict[str, int] = {}
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=err, transient=True) as prog:
            def listener(name: str, n: int, total: int | None) -> None:
                if name not in tasks:
                    tasks[name] = prog.add_task(name, total=total)
                prog.advance(tasks[name], n)

            progress.subscribe(listener)
            try:
                yield
            finally:
                progress.unsubscribe(listener)

    return bar()


@app.command()
def backup(
    database_url: Annotated[str | None, typer.Option(
        help="Database to back up (also DATABASE_URL; Prisma's ?schema= form accepted).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Repository: s3://bucket/prefix or file:///path.")] = None,
    all_databases: Annotated[bool, typer.Option("--all", help="Every non-template database of the server.")] = False,
    docker_container: Annotated[str | None, typer.Option(
        help="Run pg_dump inside this container via the Docker API (URL as seen from inside it).")] = None,
    encrypt_to: Annotated[list[str] | None, typer.Option(
        help="age public key (age1…) to encrypt to; repeatable.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Back up PostgreSQL into the repository (runs the Prefect 'backup' flow)."""
    from charhub_ops.settings import load_settings
    from charhub_ops.storage import S3Options, open_storage

    def check() -> None:  # fail fast on bad input, before Prefect starts
        if database_url is not None:
            os.environ["CHARHUB_OPS_DATABASE_URL"] = database_url
        settings = load_settings(repository=to, docker_container=docker_container, encrypt_to=encrypt_to or None)
        from charhub_ops.streams import parse_recipients

        use_database_url(None, settings)
        parse_recipients(settings.encrypt_to)
        open_storage(settings.repository, S3Options.from_settings(settings))

    run_guarded(check)
    _prepare_prefect()
    from flows.backup import backup_flow

    with _progress_bar(not as_json):
        results = run_guarded(lambda: backup_flow(repository=to, all_databases=all_databases,
                                                  docker_container=docker_container, encrypt_to=encrypt_to))
    if as_json:
        _print_json(results if all_databases else results[0])
        return
    for r in results:
        err.print(f"[green]✓[/] {r['database']}: backup {r['backup_id']} → {r['key']} "
                  f"({r['size_bytes']} bytes, sha256 {r['sha256'][:16]}…)", highlight=False)


@backups_app.command("list")
def backups_list(repository: RepoOpt = None, database: Annotated[str | None, typer.Option(
        help="Only this database.")] = None, as_json: JsonOpt = False) -> None:
    """List complete backups, newest first."""
    from charhub_ops.catalog import backup_summary, list_backups_verified

    def work() -> list[dict]:
        storage = _open_repo(repository)
        return [backup_summary(storage.url, m, v) for m, v in list_backups_verified(storage, database)]

    rows = run_guarded(work)
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    from charhub_ops.fmt import human_bytes

    table = Table("backup id", "database", "finished UTC", "size", "tables", "rows", "age", "verified")
    for column in table.columns[:3]:
        column.no_wrap = True
    for r in rows:
        verified = "—" if r["verified_ok"] is None else ("ok" if r["verified_ok"] else "FAILED")
        table.add_row(r["backup_id"], r["database"], r["finished_at"][:16].replace("T", " "),
                      human_bytes(r["size_bytes"]), str(r["tables"]), str(r["rows"]),
                      "age" if r["encrypted"] else "no", verified)
    Console().print(table)


def use_database_url(url: str | None, settings=None):
    """Put ``--database-url`` in this process's environment (never in flow parameters) and parse it."""
    from charhub_ops.pgurl import parse_pg_url
    from charhub_ops.settings import load_settings

    if url is not None:
        os.environ["CHARHUB_OPS_DATABASE_URL"] = url
        settings = None
    settings = settings or load_settings()
    if settings.database_url is None:
        raise OpsError("database_url: not set (pass --database-url or set DATABASE_URL)")
    return parse_pg_url(settings.database_url.get_secret_value())


def _open_repo(repository: str | None):
    from charhub_ops.settings import load_settings
    from charhub_ops.storage import S3Options, open_storage

    settings = load_settings(repository=repository)
    return open_storage(settings.repository, S3Options.from_settings(settings))


def main() -> None:
    app()


# Commands of the other pipelines register themselves on `app` / `backups_app`.
from charhub_ops import cli_restore, cli_retention  # noqa: E402,F401

if __name__ == "__main__":
    main()
