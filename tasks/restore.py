"""Tasks of the restore and verification pipelines (they touch the repository and PostgreSQL), and their
plan and report artifacts."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import NONE
from pydantic import BaseModel

from charhub_ops import progress
from charhub_ops.backup import catalog
from charhub_ops.backup.manifest import Manifest, Verification
from charhub_ops.errors import ConfigError, OpsError
from charhub_ops.fmt import human_bytes
from charhub_ops.pgurl import PgUrl
from charhub_ops.postgres import admin_session, find_local_tool, make_tools, open_session, tool_major
from charhub_ops.restore import datapath, engine
from charhub_ops.settings import Settings
from tasks.common import RETRY, RepoSpec, database_url, repo_spec

__all__ = ["RestoreConfig", "resolve_restore_config", "select_backup", "choose_restore_mode", "fetch_backup",
           "create_target", "restore_new_database", "check_copy", "drop_database", "record_verification",
           "ensure_absent", "fetch_globals", "create_missing_roles", "remove_work_files", "restore_plan",
           "check_report"]


class RestoreConfig(BaseModel):
    model_config = {"arbitrary_types_allowed": True}

    repo: RepoSpec
    url: PgUrl
    container: str | None
    identity_file: str | None
    identity_secret: str | None
    jobs: int
    restore_mode: str
    work_dir: str
    app_containers: list[str]
    production: bool


@task(name="resolve-config", cache_policy=NONE)
def resolve_restore_config(settings: Settings, identity_secret: str | None,
                           database_url_secret: str | None) -> RestoreConfig:
    """The run's settings (read by the flow, its parameters over the environment) and the database URL."""
    restore = settings.restore
    return RestoreConfig(
        repo=repo_spec(settings.storage), url=database_url(settings.database, database_url_secret),
        container=settings.database.docker_container, identity_file=restore.age_identity_file,
        identity_secret=identity_secret, jobs=restore.restore_jobs, restore_mode=restore.restore_mode,
        work_dir=settings.runs.work_dir or tempfile.gettempdir(), app_containers=restore.app_containers,
        production=settings.database.production)


@task(name="select-backup", cache_policy=NONE, **RETRY)
def select_backup(repo: RepoSpec, source: str | None, fallback: str, backup: str, before: datetime | None,
                  unverified_first: bool = False) -> Manifest:
    """The backup to restore: ``latest``, an id, or the newest at/before ``before`` — of ``source`` (default:
    the only database in the repository, else ``fallback``). With ``unverified_first``: the newest never verified."""
    storage = repo.open()
    entries = catalog.list_backups_verified(storage)
    databases = sorted({m.database for m, _ in entries})
    if source is None:
        source = databases[0] if len(databases) == 1 else fallback
    if source not in databases:
        raise ConfigError(f"source database: no backups of '{source}' in {storage.url} "
                          f"(it has: {', '.join(databases) or 'none'})")
    mine = [(m, v) for m, v in entries if m.database == source]
    if unverified_first and backup == "latest" and before is None:
        never = [m for m, v in mine if v is None]
        if never:
            return never[0]
    return engine.pick_backup([m for m, _ in mine], backup, before)


@task(name="choose-restore-mode", cache_policy=NONE)
def choose_restore_mode(cfg: RestoreConfig, manifest: Manifest) -> str:
    """``stream`` (GET → checks → pg_restore stdin) or ``file`` (verified file, then pg_restore -j): the
    setting, or with ``auto`` what this machine does faster and its work dir can hold."""
    mode, why = datapath.choose_mode(cfg.restore_mode, cfg.work_dir, manifest.raw_size_bytes, cfg.jobs,
                                       cfg.container)
    get_run_logger().info("restore mode: %s (%s)", mode, why)
    return mode


@task(name="fetch-and-verify", cache_policy=NONE, **RETRY)
def fetch_backup(cfg: RestoreConfig, manifest: Manifest) -> str:
    """File mode: download, check size + SHA-256, decrypt, decompress into a new file in the work dir —
    before any database write. A work dir without room for the dump is refused before the download."""
    identities = _identities(cfg) if manifest.encrypted else None
    datapath.check_work_space(cfg.work_dir, manifest.raw_size_bytes)
    dest = datapath.work_file(cfg.work_dir, manifest.backup_id, ".pgc")
    datapath.fetch_verified(cfg.repo.open(), manifest, dest, identities, progress=_progress(manifest))
    get_run_logger().info("%s: %d bytes verified (sha256 %s…)", manifest.backup_id, manifest.stored_size_bytes,
                          manifest.sha256[:16])
    return str(dest)


@task(name="fetch-globals", cache_policy=NONE, **RETRY)
def fetch_globals(cfg: RestoreConfig, manifest: Manifest) -> str | None:
    """The backup's roles (pg_dumpall --globals-only), verified like the dump; None if it has none."""
    if manifest.globals is None:
        get_run_logger().warning("%s has no globals (%s)", manifest.backup_id, manifest.globals_note or "none saved")
        return None
    identities = _identities(cfg) if manifest.encrypted else None
    dest = datapath.work_file(cfg.work_dir, manifest.backup_id, "-globals.sql")
    datapath.fetch_verified(cfg.repo.open(), manifest, dest, identities, ref=manifest.globals)
    return str(dest)


def remove_work_files(*paths: str | None) -> None:
    """Remove what the fetch tasks left in the work dir (a plain function: nothing to retry or record)."""
    for path in paths:
        if path:
            Path(path).unlink(missing_ok=True)


def _progress(manifest: Manifest):
    return lambda n: progress.report(f"fetch {manifest.backup_id}", n, manifest.stored_size_bytes)


@task(name="create-missing-roles", cache_policy=NONE)
def create_missing_roles(url: PgUrl, container: str | None, globals_file: str | None) -> list[str]:
    """Create the backup's roles that the server lacks; existing roles are never altered."""
    if globals_file is None:
        return []
    with admin_session(url, container) as session:
        statements, roles = engine.missing_roles_sql(Path(globals_file).read_text(), engine.existing_roles(session))
    if roles:
        script = Path(globals_file).with_suffix(".roles.sql")
        script.write_text(statements)
        try:
            engine.run_sql_file(make_tools(url.with_dbname("postgres"), container), script)
        finally:
            script.unlink(missing_ok=True)
    get_run_logger().info("roles created: %s", ", ".join(roles) or "none (all exist)")
    return roles


@task(name="check-target-absent", cache_policy=NONE)
def ensure_absent(url: PgUrl, container: str | None, name: str) -> None:
    """Refuse early (before any download) when the new database's name is taken."""
    with admin_session(url, container) as session:
        engine.ensure_absent(session, name)


def _identities(cfg: RestoreConfig) -> list:
    text = Secret.load(cfg.identity_secret).get() if cfg.identity_secret else None
    return engine.load_identities(cfg.identity_file, text)


@task(name="create-target", cache_policy=NONE)
def create_target(url: PgUrl, container: str | None, name: str, manifest: Manifest) -> None:
    """CREATE DATABASE with the backup's encoding and collation; an existing database is refused, never
    overwritten."""
    with admin_session(url, container) as session:
        engine.create_database(session, name, manifest.locale)


@task(name="restore-new-database", cache_policy=NONE, **RETRY)
def restore_new_database(cfg: RestoreConfig, manifest: Manifest, target: str, no_owner: bool,
                         dump: str | None = None) -> None:
    """CREATE DATABASE ``target`` and pg_restore into it: from the verified file ``dump`` (-j N), or with
    ``dump=None`` streamed from the repository (checksum at the end of the object). On any failure the
    database this task created is dropped, so the run leaves nothing half-restored and a retry (of a
    transient storage or server error) starts from a fresh database. A refused CREATE drops nothing."""
    tools = _restore_tools(cfg, manifest, target)
    if dump is not None:
        _create_and_restore(cfg, manifest, target,
                            lambda: datapath.pg_restore(tools, Path(dump), cfg.jobs, no_owner))
        return
    identities = _identities(cfg) if manifest.encrypted else None
    with datapath.VerifiedReader(cfg.repo.open(), manifest, identities, _progress(manifest)) as source:
        source.prime()  # a missing object, a wrong key or a bad header fail here, before CREATE DATABASE
        _create_and_restore(cfg, manifest, target, lambda: datapath.pg_restore_stream(tools, source, no_owner))
    get_run_logger().info("%s: streamed, %d bytes verified (sha256 %s…)", manifest.backup_id,
                          manifest.stored_size_bytes, manifest.sha256[:16])


def _create_and_restore(cfg: RestoreConfig, manifest: Manifest, target: str, restore_into) -> None:
    """CREATE DATABASE ``target`` (create-target's body), then ``restore_into()``; drop it if that fails."""
    create_target.fn(cfg.url, cfg.container, target, manifest)
    try:
        restore_into()
    except BaseException:
        _drop_after_failure(cfg, target)
        raise


def _drop_after_failure(cfg: RestoreConfig, target: str) -> None:
    try:
        with admin_session(cfg.url, cfg.container) as session:
            engine.drop_database(session, target)
    except OpsError as exc:  # the restore's own error is the one to report
        get_run_logger().error("could not drop the half-restored database %s: %s", target, exc)


def _restore_tools(cfg: RestoreConfig, manifest: Manifest, target: str):
    """pg_restore in the container, or a local one at least as new as the dump's pg_dump."""
    bindir = None
    if not cfg.container:
        need = tool_major(manifest.pg_dump_version)
        found = find_local_tool("pg_restore", need)
        if found is None:
            raise ConfigError(f"pg_restore: no local pg_restore ≥ {need} (the dump was made by pg_dump {need}): "
                              "install it or pass --docker-container NAME")
        bindir = found[0].rsplit("/", 1)[0]
    return make_tools(cfg.url.with_dbname(target), cfg.container, bindir)


@task(name="check-copy", cache_policy=NONE)
def check_copy(url: PgUrl, container: str | None, target: str, manifest: Manifest,
               with_hashes: bool) -> engine.CheckResult:
    """Row counts (and content hashes) of the restored copy against the manifest."""
    with open_session(url.with_dbname(target), container) as session:
        result = engine.check_restored(session, manifest, with_hashes)
    log = get_run_logger()
    log.info("%s: %d tables, %d rows, %d content hashes compared", target, result.tables, result.rows, result.hashed)
    for problem in result.mismatches:
        log.error("%s: %s", target, problem)
    return result


@task(name="drop-scratch-database", cache_policy=NONE)
def drop_database(url: PgUrl, container: str | None, name: str) -> None:
    with admin_session(url, container) as session:
        engine.drop_database(session, name)


@task(name="record-verification", cache_policy=NONE, **RETRY)
def record_verification(repo: RepoSpec, manifest: Manifest, result: engine.CheckResult,
                        started: datetime) -> Verification:
    now = datetime.now(UTC)
    verdict = Verification(backup_id=manifest.backup_id, verified_at=now, ok=result.ok, tables=result.tables,
                           rows=result.rows, hashed_tables=result.hashed, mismatches=result.mismatches,
                           duration_seconds=(now - started).total_seconds())
    catalog.write_verification(repo.open(), manifest.database, verdict)
    return verdict


@task(name="restore-plan", cache_policy=NONE)
def restore_plan(manifest: Manifest, target: str, server: str, replace: bool, live: str | None,
                 stop: list[str], now: datetime) -> str:
    """The preview of a restore: what will be restored where, and what will be stopped."""
    age = now - manifest.finished_at
    lines = [
        f"# Restore plan: `{manifest.backup_id}` → `{target}`", "",
        "| item | value |", "|---|---|",
        f"| backup | `{manifest.backup_id}` of `{manifest.database}` |",
        f"| finished | {manifest.finished_at:%Y-%m-%d %H:%M:%S} UTC ({age.total_seconds() / 3600:.1f} h ago) |",
        f"| size | {human_bytes(manifest.stored_size_bytes)} stored, {human_bytes(manifest.raw_size_bytes)} raw |",
        f"| tables / rows | {len(manifest.tables)} / {sum(t.rows for t in manifest.tables)} |",
        f"| server | `{server}` |",
        f"| new database | `{target}` (created; must not exist) |",
    ]
    if replace:
        lines += [f"| swap | `{live}` → `{live}_pre_restore_…` (kept), `{target}` → `{live}` |",
                  f"| safety backup | of `{live}` first |",
                  f"| containers stopped | {', '.join(f'`{c}`' for c in stop) or 'none'} |"]
    markdown = "\n".join(lines)
    create_markdown_artifact(markdown, key="restore-plan", description="charhub-ops restore plan")
    return markdown


@task(name="check-report", cache_policy=NONE)
def check_report(kind: str, manifest: Manifest, target: str, ok: bool, tables: int, rows: int, hashed: int,
                 mismatches: list[str], approval: str | None = None) -> str:
    """The result of a restore or a verification drill; ``approval``: the answer to the run's approval pause
    (flows/approval.py Decision.line: approved, UTC time, reason)."""
    lines = [f"# {kind} of `{manifest.backup_id}` ({manifest.database}) into `{target}`: "
             f"{'OK' if ok else 'FAILED'}", "",
             f"{tables} tables, {rows} rows compared with the manifest; {hashed} content hashes compared.", ""]
    lines += [approval, ""] if approval else []
    lines += [f"- ✗ {m}" for m in mismatches]
    markdown = "\n".join(lines)
    create_markdown_artifact(markdown, key=f"{kind.lower()}-report", description=f"charhub-ops {kind.lower()}")
    return markdown
