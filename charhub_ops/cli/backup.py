"""`charhub-ops backup`: checks its input, then runs the Prefect ``backup`` flow."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from charhub_ops.cli.app import JsonOpt, err, prepare_prefect, print_json, progress_bar, run_guarded, use_database_url

if TYPE_CHECKING:
    from flows.params import Access

__all__ = ["backup"]


def _check(database_url: str | None, to: str | None, docker_container: str | None,
           encrypt_to: list[str] | None) -> Access:
    """Fail fast on bad input, before Prefect starts; returns the flow's ``access`` parameter."""
    from charhub_ops.settings import load_settings
    from charhub_ops.storage import open_storage
    from charhub_ops.streams import parse_recipients
    from flows.params import Access, Repository, build, check_value

    if database_url is not None:
        os.environ["CHARHUB_OPS_DATABASE_URL"] = database_url
    settings = load_settings(repository=to, docker_container=docker_container, encrypt_to=encrypt_to or None)
    use_database_url(None, settings)
    parse_recipients(settings.backup.encrypt_to)
    open_storage(settings.storage.repository, settings.storage.s3_options())
    check_value("--to", Repository | None, to)
    return build(Access, docker_container=docker_container)


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
    access = run_guarded(lambda: _check(database_url, to, docker_container, encrypt_to))
    prepare_prefect()
    from flows.backup import backup_flow

    with progress_bar(not as_json):
        results = run_guarded(lambda: backup_flow(repository=to, all_databases=all_databases, access=access,
                                                  encrypt_to=encrypt_to))
    if as_json:
        print_json(results if all_databases else results[0])
        return
    for r in results:
        err.print(f"[green]✓[/] {r['database']}: backup {r['backup_id']} → {r['key']} "
                  f"({r['size_bytes']} bytes, sha256 {r['sha256'][:16]}…)", highlight=False)
