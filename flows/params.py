"""Flow parameters as forms: small pydantic models the Prefect UI renders as titled sections.

Each model groups what an operator decides together (which backup, where to restore it, how to reach the
server, how to decrypt), its fields ordered by importance, each with a title, a description and the
bounds or pattern the value must meet — the server checks them before a run starts. Defaults are the
flows' previous defaults: a run with no parameters does what it did before.

Secrets are never parameters: a form asks for the NAME of a Prefect Secret block (``*_secret``), never a
URL with a password or an identity's text. No parameter skips a safety check (the swap's approval is
asked by the flow itself). Python callers may pass a dict for a model (pydantic validates it).

This module imports only pydantic (the CLI builds these models before Prefect starts).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from charhub_ops.errors import ConfigError

__all__ = [
    "BACKUP_ID_PATTERN", "BLOCK_NAME_PATTERN", "CONTAINER_PATTERN", "DURATION_PATTERN", "REPOSITORY_PATTERN",
    "AGE_RECIPIENT_PATTERN", "Access", "BlockName", "ContainerName", "DatabaseName", "Decryption", "Repository",
    "RestoreSource", "RestoreTarget", "Seconds", "VerifySource", "build", "check_value",
]

# s3://bucket[/prefix] or file://path; no whitespace and no '@' (credentials never go in the URL).
REPOSITORY_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]*[a-z0-9](/[^\s@]*)?|file://[^\s@]+)$"
# Prefect block document names: lowercase letters, digits and dashes.
BLOCK_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
# Docker container names ([a-zA-Z0-9][a-zA-Z0-9_.-]*) and ids.
CONTAINER_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
# charhub_ops.manifest.new_backup_id: UTC start time + random hex suffix (20261126T023000Z-3f9a).
BACKUP_ID_PATTERN = r"^(latest|\d{8}T\d{6}Z-[0-9a-f]{4,})$"
# charhub_ops.retention.parse_duration: number + unit groups (7d, 2w, 1y6m, 36h); zero or a unit twice is
# refused by the policy itself.
DURATION_PATTERN = r"^(\d+[ymwdh])+$"
# age X25519 recipients: bech32 "age1" + 58 characters.
AGE_RECIPIENT_PATTERN = r"^age1[02-9ac-hj-np-z]{58}$"

Repository = Annotated[str, StringConstraints(pattern=REPOSITORY_PATTERN, max_length=1024)]
BlockName = Annotated[str, StringConstraints(pattern=BLOCK_NAME_PATTERN, max_length=255)]
ContainerName = Annotated[str, StringConstraints(pattern=CONTAINER_PATTERN, max_length=255)]
DatabaseName = Annotated[str, StringConstraints(min_length=1, max_length=63)]
BackupId = Annotated[str, StringConstraints(pattern=BACKUP_ID_PATTERN)]
AgeRecipient = Annotated[str, StringConstraints(pattern=AGE_RECIPIENT_PATTERN)]
Seconds = Annotated[float, Field(gt=0, le=86400)]

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


def _problems(exc: ValidationError, prefix: str = "") -> str:
    return "; ".join(f"{'.'.join(map(str, (prefix, *e['loc']) if prefix else e['loc']))}: {e['msg']}"
                     for e in exc.errors())


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
