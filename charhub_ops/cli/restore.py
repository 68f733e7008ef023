"""`charhub-ops restore` and `charhub-ops verify`: each checks its input, then runs its Prefect flow."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from charhub_ops.cli.app import (
    JsonOpt,
    RepoOpt,
    err,
    prepare_prefect,
    print_json,
    progress_bar,
    run_guarded,
    run_verdict,
    use_database_url,
)
from charhub_ops.errors import ConfigError

__all__ = ["restore", "verify", "parse_time"]

BackupOpt = Annotated[str, typer.Option("--backup", help="'latest' or a backup id.")]
IdentityOpt = Annotated[str | None, typer.Option("--identity", help="age identity file for encrypted backups.")]
ContainerOpt = Annotated[str | None, typer.Option(
    "--docker-container", help="Run pg_restore/psql inside this container through the Docker API.")]
SourceOpt = Annotated[str | None, typer.Option(
    "--source", help="Whose backups to use (default: the only database in the repository, else the URL's).")]
UrlOpt = Annotated[str | None, typer.Option("--database-url", help="Target server and database (also DATABASE_URL).")]


def parse_time(text: str | None, option: str) -> datetime | None:
    """ISO 8601 (naive means UTC); ConfigError naming ``option``."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option}: cannot parse '{text}' (use ISO 8601, e.g. 2026-11-20T03:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def restore(
    database_url: UrlOpt = None,
    repository: RepoOpt = None,
    backup: BackupOpt = "latest",
    before: Annotated[str | None, typer.Option(help="Newest complete backup at or before this time (UTC).")] = None,
    source: SourceOpt = None,
    replace: Annotated[bool, typer.Option(
        help="Restore into a new database, then swap it into the URL's database (safety backup first).")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --replace on a production target.")] = False,
    identity: IdentityOpt = None,
    docker_container: ContainerOpt = None,
    no_owner: Annotated[bool, typer.Option(help="Skip ownership and privileges (roles may not exist).")] = False,
    with_globals: Annotated[bool, typer.Option(
        help="Create the backup's roles that the server lacks (existing roles are never altered).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup into a new database (the URL's, which must not exist), verified against its manifest."""
    from charhub_ops.settings import load_settings
    from flows.params import Access, Decryption, Repository, RestoreSource, RestoreTarget, build, check_value

    def check() -> dict:
        url = use_database_url(database_url)
        when = parse_time(before, "--before")
        if replace and load_settings().database.production and not yes:
            raise ConfigError("--replace on a production target (CHARHUB_OPS_PRODUCTION) needs --yes")
        return {"repository": check_value("--from", Repository | None, repository),
                "source": build(RestoreSource, source_database=source, backup=backup, before=when),
                "target": build(RestoreTarget, target_database=None if replace else url.dbname, replace=replace,
                                no_owner=no_owner, with_globals=with_globals),
                "access": build(Access, docker_container=docker_container),
                "decryption": build(Decryption, identity_file=identity)}

    params = run_guarded(check)
    prepare_prefect()
    from flows.restore import restore_flow

    with progress_bar(not as_json):
        result = run_guarded(lambda: restore_flow(**params))
    if as_json:
        print_json(result)
    else:
        err.print(f"[green]✓[/] backup {result['backup_id']} restored into {result['database']}: "
                  f"{result['tables']} tables, {result['rows']} rows match the manifest", highlight=False)


def verify(
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Server (and maintenance database) for the scratch database.")] = None,
    repository: RepoOpt = None,
    backup: Annotated[str, typer.Option("--backup", help="'latest' (newest never verified) or an id.")] = "latest",
    source: SourceOpt = None,
    identity: IdentityOpt = None,
    docker_container: ContainerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore drill: restore a backup into a scratch database, compare it with the manifest, drop it."""
    from flows.params import Access, Decryption, Repository, VerifySource, build, check_value

    def check() -> dict:
        use_database_url(database_url)
        return {"repository": check_value("--from", Repository | None, repository),
                "source": build(VerifySource, source_database=source, backup=backup),
                "access": build(Access, docker_container=docker_container),
                "decryption": build(Decryption, identity_file=identity)}

    params = run_guarded(check)
    prepare_prefect()
    from flows.verify import verify_flow

    def run() -> dict:
        with progress_bar(not as_json):
            return verify_flow(**params)

    result = run_verdict(run, as_json)
    if as_json:
        print_json(result)
    else:
        err.print(f"[green]✓[/] backup {result['backup_id']} verified: {result['tables']} tables, "
                  f"{result['rows']} rows, {result['hashed_tables']} content hashes match", highlight=False)
