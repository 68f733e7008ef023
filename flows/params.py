"""Flow parameters as forms: small pydantic models the Prefect UI renders as titled sections.

Each model groups what an operator decides together (which backup, where to restore it, how to reach the
server, how to decrypt), its fields ordered by importance, each with a title, a description and the
bounds or pattern the value must meet — the server checks them before a run starts. Defaults are the
flows' previous defaults: a run with no parameters does what it did before.

Secrets are never parameters: a form asks for the NAME of a Prefect Secret block (``*_secret``), never a
URL with a password or an identity's text. No parameter skips a safety check (the swap's approval is
asked by the flow itself). Python callers may pass a dict for a model (pydantic validates it).

No Prefect import here: the CLI builds these models (:func:`build`) before Prefect starts.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from charhub_ops.errors import ConfigError
from charhub_ops.monitoring.config import ID_RE

__all__ = [
    # patterns (also the JSON schema's) and help texts
    "ACCEPT_PATTERN", "AGE_RECIPIENT_PATTERN", "BACKUP_ID_PATTERN", "BLOCK_NAME_PATTERN", "CHECK_ID_PATTERN",
    "CONTAINER_PATTERN", "DURATION_PATTERN", "REPOSITORY_PATTERN", "STATE_PATTERN",
    "CONFIG_HELP", "REPOSITORY_HELP", "STATE_HELP",
    # constrained types for flat parameters
    "AgeRecipient", "BackupId", "BlockName", "CheckId", "CleanupPart", "ContainerName", "Count", "DatabaseName",
    "MediaMode", "Repository", "Seconds", "StateStore",
    # groups
    "Access", "Decryption", "MigrateApply", "MigrateOverrides", "RestoreSource", "RestoreTarget", "Retention",
    "VerifySource",
    # for the CLI
    "build", "check_value",
    # for the flows
    "described",
]

# s3://bucket[/prefix] or file://path; no whitespace and no '@' (credentials never go in the URL).
REPOSITORY_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]*[a-z0-9](/[^\s@]*)?|file://[^\s@]+)$"
# Prefect block document names: lowercase letters, digits and dashes.
BLOCK_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
# Docker container names ([a-zA-Z0-9][a-zA-Z0-9_.-]*) and ids.
CONTAINER_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
# charhub_ops.backup.manifest.new_backup_id: UTC start time + random hex suffix (20261126T023000Z-3f9a).
BACKUP_ID_PATTERN = r"^(latest|\d{8}T\d{6}Z-[0-9a-f]{4,})$"
# charhub_ops.retention.policy.parse_duration: number + unit groups (7d, 2w, 1y6m, 36h); zero or a unit twice is
# refused by the policy itself.
DURATION_PATTERN = r"^(\d+[ymwdh])+$"
# migrate --accept: a squawk rule, optionally ':' and a migration directory name.
ACCEPT_PATTERN = r"^[A-Za-z0-9_-]+(:[^\s:]+)?$"
# charhub_ops.monitoring.config.ID_RE: a check id (also a Prefect variable name and event resource part).
CHECK_ID_PATTERN = ID_RE.pattern
# setting monitor_state: where the monitor's state lives.
STATE_PATTERN = r"^(auto|prefect|repository|(s3|file)://\S+)$"
# age X25519 recipients: bech32 "age1" + 58 characters.
AGE_RECIPIENT_PATTERN = r"^age1[02-9ac-hj-np-z]{58}$"

Repository = Annotated[str, StringConstraints(pattern=REPOSITORY_PATTERN, max_length=1024)]
BlockName = Annotated[str, StringConstraints(pattern=BLOCK_NAME_PATTERN, max_length=255)]
ContainerName = Annotated[str, StringConstraints(pattern=CONTAINER_PATTERN, max_length=255)]
DatabaseName = Annotated[str, StringConstraints(min_length=1, max_length=63)]
BackupId = Annotated[str, StringConstraints(pattern=BACKUP_ID_PATTERN)]
AgeRecipient = Annotated[str, StringConstraints(pattern=AGE_RECIPIENT_PATTERN)]
Seconds = Annotated[float, Field(gt=0, le=86400)]
Count = Annotated[int, Field(ge=-1, le=100_000)]
CheckId = Annotated[str, StringConstraints(pattern=CHECK_ID_PATTERN)]
StateStore = Annotated[str, StringConstraints(pattern=STATE_PATTERN, max_length=1024)]
CleanupPart = Literal["rows", "storage", "docker", "prefect"]
MediaMode = Literal["dry-run", "quarantine", "delete"]

CONFIG_HELP = "The monitor's YAML file (checks, windows, incidents); default from settings (CHARHUB_OPS_MONITOR_CONFIG)"
STATE_HELP = ("Where streaks and incidents live: auto, prefect (Variables), repository, or a file:// / s3:// URL; "
              "default from settings (CHARHUB_OPS_MONITOR_STATE)")
REPOSITORY_HELP = "s3://bucket/prefix (S3 or R2) or file:///path; default from settings (CHARHUB_OPS_REPOSITORY)"

_FORM = ConfigDict(extra="forbid", frozen=True)


class Access(BaseModel):
    """How to reach the database server: a Secret block's name and, optionally, its container."""

    model_config = ConfigDict(_FORM, title="Database server")

    database_url_secret: BlockName | None = Field(
        None, title="Database URL (Secret block name)",
        description="Name of the Prefect Secret block holding the server's URL; default: DATABASE_URL from the "
                    "environment")
    docker_container: ContainerName | None = Field(
        None, title="Docker container",
        description="Run pg_dump / pg_restore / psql inside this container (CharHub: charhub-postgres-1); "
                    "the URL is then as seen from inside it")


class Decryption(BaseModel):
    """Where the age identity of encrypted backups comes from (never the identity itself)."""

    model_config = ConfigDict(_FORM, title="Decryption (encrypted backups)")

    identity_secret: BlockName | None = Field(
        None, title="age identity (Secret block name)",
        description="Name of the Prefect Secret block holding the age identity")
    identity_file: str | None = Field(
        None, title="age identity file", max_length=4096,
        description="Path of an age identity file on the machine that runs the flow; default from settings "
                    "(CHARHUB_OPS_AGE_IDENTITY_FILE)")


class VerifySource(BaseModel):
    """The backup a restore drill checks."""

    model_config = ConfigDict(_FORM, title="Which backup")

    backup: BackupId = Field(
        "latest", title="Backup",
        description="'latest' (the newest backup never verified) or a backup id such as 20261126T023000Z-3f9a")
    source_database: DatabaseName | None = Field(
        None, title="Source database",
        description="Whose backups; default: the only database in the repository")


class RestoreSource(BaseModel):
    """The backup to restore."""

    model_config = ConfigDict(_FORM, title="Which backup")

    backup: BackupId = Field(
        "latest", title="Backup", description="'latest' or a backup id such as 20261126T023000Z-3f9a")
    before: datetime | None = Field(
        None, title="At or before",
        description="With 'latest': the newest complete backup at or before this time (UTC)")
    source_database: DatabaseName | None = Field(
        None, title="Source database",
        description="Whose backups; default: the only database in the repository")


class RestoreTarget(BaseModel):
    """Where the backup goes: always a NEW database; with ``replace`` it is then swapped into the live name."""

    model_config = ConfigDict(_FORM, title="Restore into")

    target_database: DatabaseName | None = Field(
        None, title="New database",
        description="Name of the database to create (it must not exist); default <db>_restore_<UTC time>")
    replace: bool = Field(
        False, title="Replace the live database",
        description="Swap the verified copy into the live name (safety backup first; the old database is kept). "
                    "Production: the run pauses for an approval showing the plan")
    with_globals: bool = Field(
        False, title="Create missing roles",
        description="Create the backup's roles the server lacks (existing roles are never altered)")
    no_owner: bool = Field(
        False, title="Without owners",
        description="Restore without ownership and privileges (for a server without the backup's roles)")


class Retention(BaseModel):
    """The GFS policy of a prune run (restic ``forget`` semantics, see charhub_ops.retention.options)."""

    model_config = ConfigDict(_FORM, title="Retention policy (any rule given replaces the settings' policy)")

    keep_daily: Count | None = Field(
        None, title="Daily", description="Keep the newest backup of each of the last N days (-1 = all); "
                                         "none given: the settings' policy (daily 7, weekly 4, monthly 6)")
    keep_weekly: Count | None = Field(
        None, title="Weekly", description="Keep the newest backup of each of the last N ISO weeks")
    keep_monthly: Count | None = Field(
        None, title="Monthly", description="Keep the newest backup of each of the last N months")
    keep_yearly: Count | None = Field(
        None, title="Yearly", description="Keep the newest backup of each of the last N years")
    keep_last: Count | None = Field(None, title="Last", description="Keep the newest N backups (-1 = all)")
    keep_within: Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)] | None = Field(
        None, title="Within", description="Keep every backup within this duration of the newest (7d, 2w, 1y6m, 36h)")
    keep_hourly: Count | None = Field(
        None, title="Hourly", description="Keep the newest backup of each of the last N hours")
    min_keep: Annotated[int, Field(ge=0, le=100_000)] | None = Field(
        None, title="At least", description="Never keep fewer complete backups of a database; default from "
                                            "settings (CHARHUB_OPS_MIN_KEEP, 3)")


class MigrateApply(BaseModel):
    """How the migrations are applied."""

    model_config = ConfigDict(_FORM, title="How to apply")

    prisma_container: ContainerName | None = Field(
        None, title="Prisma container",
        description="Apply with the app's `npx prisma migrate deploy` in this container instead of natively")
    lock_wait: Annotated[float, Field(ge=0, le=3600)] | None = Field(
        None, title="Lock wait (s)",
        description="Seconds to wait for Prisma's migration lock; default from settings (migrate_lock_wait)")
    operator: Annotated[str, StringConstraints(max_length=100)] | None = Field(
        None, title="Operator", description="Who runs this (recorded); default: the OS user")


class MigrateOverrides(BaseModel):
    """Lint findings the operator accepts, recorded in the migration history with the operator. Skipping the drift
    check or the backup is no form field: only the CLI can (``flows.migrate.cli_exceptions``)."""

    model_config = ConfigDict(_FORM, title="Overrides (recorded in the history)")

    accept: list[Annotated[str, StringConstraints(pattern=ACCEPT_PATTERN)]] | None = Field(
        None, title="Accepted lint findings",
        description="RULE or RULE:MIGRATION (e.g. adding-required-field:20261101_add_tier) whose lock is "
                    "acceptable; every other blocking finding still stops the run")


M = TypeVar("M", bound=BaseModel)


def build(model: type[M], **values: Any) -> M:
    """``model(**values)`` for callers outside Prefect (the CLI): a bad value is a ConfigError naming the field."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise ConfigError(f"{model.model_config.get('title') or model.__name__}: {_problems(exc)}") from None


def check_value(name: str, annotation: Any, value: Any) -> Any:
    """``value`` validated as a top-level parameter of type ``annotation`` (e.g. ``Repository | None``);
    a ConfigError naming ``name`` otherwise."""
    try:
        return TypeAdapter(annotation).validate_python(value)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, name)) from None


def _problems(exc: ValidationError, prefix: str = "") -> str:
    return "; ".join(f"{'.'.join(map(str, (prefix, *e['loc']) if prefix else e['loc']))}: {e['msg']}"
                     for e in exc.errors())


F = TypeVar("F", bound=Callable)


def described(fn: F) -> F:
    """Put each parameter's ``Annotated[…, Field(description=…)]`` text into the docstring's ``Args:`` section,
    where Prefect's forms read it (decorate under ``@flow``).

    Why not ``x: T = Field(None, description=…)``: Prefect's schema reads such a default, but a deployment run
    that leaves the parameter out (a schedule's ``{}``, a trigger setting a few) then receives the ``FieldInfo``
    object itself, not its default (tests/test_flow_parameters.py). So defaults are plain values, constraints live
    in the ``Annotated`` type (the schema keeps them) and descriptions reach the form through the docstring."""
    hints = get_type_hints(fn, include_extras=True)
    lines = []
    for name in inspect.signature(fn).parameters:
        text = _description(hints.get(name))
        if text:
            lines += textwrap.wrap(f"{name}: {text}", 112, initial_indent="    ", subsequent_indent="        ")
    if lines:
        fn.__doc__ = f"{inspect.cleandoc(fn.__doc__ or '')}\n\nArgs:\n" + "\n".join(lines)
    return fn


def _description(hint: Any) -> str | None:
    if get_origin(hint) is not Annotated:
        return None
    return next((m.description for m in get_args(hint)[1:] if getattr(m, "description", None)), None)
