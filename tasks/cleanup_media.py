"""Media orphans for the cleanup tasks: the configuration (each prefix's owning database), the plan and the act.

Plain functions called by ``tasks.cleanup``'s storage tasks. Each scanned prefix is judged against the
database that owns its references (setting ``cleanup_media_databases``; default ``prod/`` = the run's
database); the act opens the same databases again to re-check each batch just before moving it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime

from pydantic import BaseModel

from charhub_ops.cleanup import orphans
from charhub_ops.errors import ConfigError
from charhub_ops.pgurl import PgUrl, parse_pg_url
from charhub_ops.postgres import PsycopgSession
from charhub_ops.settings import DatabaseSettings, Settings
from charhub_ops.storage import open_storage
from tasks.common import RepoSpec, database_url

__all__ = ["MediaConfig", "media_config", "plan_media", "act_media"]


class MediaConfig(BaseModel):
    model_config = {"arbitrary_types_allowed": True}

    repo: RepoSpec
    references: list[str]
    options: orphans.OrphanOptions
    databases: dict[str, PgUrl]  # prefix -> the database owning its references (owned prefixes only)


def _owner_url(database: DatabaseSettings, prefix: str, owner: str, secret_block: str | None) -> PgUrl:
    """DATABASE_URL (the run's database), a postgresql:// URL / conninfo, or a Prefect Secret block name."""
    if owner == "DATABASE_URL":
        return database_url(database, secret_block)
    setting = f"cleanup_media_databases ({prefix})"
    if "://" in owner or "=" in owner:
        return parse_pg_url(owner, setting=setting)
    try:
        return database_url(database, owner)
    except ConfigError:
        raise ConfigError(f"{setting}: no Prefect Secret block named '{owner}' (give DATABASE_URL, a "
                          f"postgresql:// URL or a Secret block name)") from None


def media_config(settings: Settings, mode: str | None, secret_block: str | None) -> MediaConfig | None:
    """The media part's configuration, validated before anything runs; None without a media repository."""
    cleanup = settings.cleanup
    if not cleanup.media_repository:
        return None
    orphans.parse_references(cleanup.media_references)  # refuses an empty list before anything runs
    opts = cleanup.orphan_options(mode)
    text = cleanup.media_databases.get_secret_value() if cleanup.media_databases else None
    owners = orphans.parse_owners(text, cleanup.media_prefixes)
    s3 = settings.storage.s3_options()
    url = open_storage(cleanup.media_repository, s3, setting="cleanup_media_repository").url
    return MediaConfig(repo=RepoSpec(url=url, s3=s3), references=cleanup.media_references, options=opts,
                       databases={p: _owner_url(settings.database, p, o, secret_block) for p, o in owners.items()})


@contextmanager
def _references(media: MediaConfig) -> Iterator[orphans.References]:
    """One session per owning database, shared by the prefixes it owns."""
    with ExitStack() as stack:
        sessions: dict[str, PsycopgSession] = {}
        for url in media.databases.values():
            if url.conninfo not in sessions:
                sessions[url.conninfo] = stack.enter_context(PsycopgSession(url))
        yield orphans.References({p: sessions[u.conninfo].conn for p, u in media.databases.items()},
                                 orphans.parse_references(media.references))


def plan_media(media: MediaConfig, now: datetime) -> dict:
    """The orphan plan as JSON, with each prefix's database (redacted) and the prefixes never scanned."""
    with _references(media) as references:
        found = orphans.plan_orphans(media.repo.open(), references, media.options, now)
    return {**found.model_dump(mode="json"), "mode": media.options.mode, "repository": media.repo.url,
            "candidate_bytes": found.candidate_bytes,
            "databases": {p: u.redacted() for p, u in media.databases.items()}}


def act_media(media: MediaConfig, plan: dict, now: datetime) -> dict:
    """Quarantine or delete the planned orphans, each batch re-checked in its prefix's database first."""
    found = orphans.OrphanPlan.model_validate(plan)
    with _references(media) as references:
        result = orphans.execute_orphans(media.repo.open(), found, media.options, now, references)
    return result.model_dump(mode="json")
