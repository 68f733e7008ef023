"""What every command shares: shared options, the one error guard, JSON printing, the progress bar.

:func:`run_guarded` is the one place that turns expected errors into one red ``error:`` line and exit
code 1, without a traceback: every ``OpsError``, Ctrl-C, and the Prefect API being unreachable (or going
away mid-run) when ``PREFECT_API_URL`` names a server.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from charhub_ops.errors import OpsError, VerificationError

__all__ = ["RepoOpt", "JsonOpt", "err", "fail", "run_guarded", "run_verdict", "exit_now_if_api_gone", "print_json",
           "prepare_prefect", "progress_bar", "use_database_url", "open_repo"]

err = Console(stderr=True)

RepoOpt = Annotated[str | None, typer.Option("--from", help="Repository: s3://bucket/prefix or file:///path "
                                                            "(default: CHARHUB_OPS_REPOSITORY, then ./backups)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]


def fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _prefect_api_error(exc: BaseException | None) -> str | None:
    """A message when ``exc`` (or its ``__cause__`` chain) says the Prefect API could not be reached or failed (httpx
    transport or HTTP status errors: Prefect's client raises those); None for anything else."""
    httpx = sys.modules.get("httpx")
    if httpx is None or "prefect" not in sys.modules:  # both are imported once a flow ran
        return None
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, httpx.TransportError | httpx.HTTPStatusError):
            from prefect.settings import PREFECT_API_URL

            what = "unreachable" if isinstance(exc, httpx.TransportError) else "answered with an error"
            cause = f"{type(exc).__name__}: {exc}".strip().rstrip(":").replace("\n", " ")
            return f"prefect: API at {PREFECT_API_URL.value()} (PREFECT_API_URL) {what}: {cause}"
        exc = exc.__cause__
    return None


_api_gone = False  # set once the Prefect API failed: see exit_now_if_api_gone()


def run_guarded(func: Callable[[], Any]) -> Any:
    """Run ``func``; an OpsError, Ctrl-C or an unavailable Prefect API becomes one clear line and exit code 1.
    Anything else is a bug and keeps its traceback."""
    global _api_gone
    try:
        return func()
    except OpsError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted")
    except Exception as exc:
        message = _prefect_api_error(exc)
        if message is None:
            raise
        _api_gone = True
        fail(message)


def run_verdict(func: Callable[[], Any], as_json: bool) -> Any:
    """:func:`run_guarded` for a command whose failure carries a verdict (VerificationError ``details``: a failed
    verify, a failed health gate): with ``as_json`` the verdict still goes to stdout, then the one error line."""

    def run() -> Any:
        try:
            return func()
        except VerificationError as exc:
            if as_json and exc.details:
                print_json(exc.details)
            raise

    return run_guarded(run)


def exit_now_if_api_gone(code: int | str | None) -> None:
    """After the Prefect API failed, leave at once with ``code``: at interpreter exit Prefect's events and
    log workers would retry the dead API for each queued item (~7 s each, 35 s+ seen) to no avail."""
    if _api_gone:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class _NoExpectedTracebacks(logging.Filter):
    """Keeps expected errors (OpsError, the Prefect API unavailable) readable in the CLI: the message stays,
    the traceback goes (logger filters, so they hold whatever handlers Prefect configures later)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OpsError) or _prefect_api_error(exc):
            record.exc_info, record.exc_text = None, None
        return True


_PREFECT_CONTEXT = ExitStack()  # settings held for the rest of the CLI process


def prepare_prefect() -> None:
    """Prefect settings of a foreground CLI run. No flow-run heartbeat: the operator watches the process,
    and each run would otherwise wait up to 1 s at its end for the heartbeat thread (deployment runs on
    workers keep Prefect's heartbeat: they are not started through this CLI). Prefect is imported frozen
    (:func:`_import_prefect_frozen`)."""
    _import_prefect_frozen()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    _PREFECT_CONTEXT.enter_context(temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LOG_PRINTS", "false")
    # Prefect's API log handler writes "--- Error logging to API ---" on stderr for every batch it cannot
    # send when this is True (the standard library's development default); run_guarded says it once.
    logging.raiseExceptions = False
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine",
                 "prefect.task_engine", "prefect.engine"):
        logging.getLogger(name).addFilter(_NoExpectedTracebacks())


@functools.cache
def _import_prefect_frozen() -> None:
    """Import Prefect's flow and task machinery with the garbage collector paused, then freeze what is alive
    (once per process). Those modules live as long as the process; frozen, no later collection traverses them
    again: ~0.2 s less CPU for a tiny backup, most of it during the import itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        import prefect.flows
        import prefect.tasks  # noqa: F401
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def progress_bar(enabled: bool) -> AbstractContextManager[None]:
    """A Rich progress bar fed by charhub_ops.progress; a no-op context when stderr is not a TTY."""
    if not enabled or not err.is_terminal:
        return nullcontext()
    return _bar()


@contextmanager
def _bar() -> Iterator[None]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from charhub_ops import progress

    tasks: dict[str, Any] = {}
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


def use_database_url(url: str | None, settings=None):
    """Put ``--database-url`` in this process's environment (never in flow parameters) and parse it."""
    from charhub_ops.pgurl import parse_pg_url
    from charhub_ops.settings import load_settings

    if url is not None:
        os.environ["CHARHUB_OPS_DATABASE_URL"] = url
        settings = None
    settings = settings or load_settings()
    if settings.database.database_url is None:
        raise OpsError("database_url: not set (pass --database-url or set DATABASE_URL)")
    return parse_pg_url(settings.database.database_url.get_secret_value())


def open_repo(repository: str | None):
    from charhub_ops.settings import load_settings
    from charhub_ops.storage import open_storage

    settings = load_settings(repository=repository)
    return open_storage(settings.storage.repository, settings.storage.s3_options())
