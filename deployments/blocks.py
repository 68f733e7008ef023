"""The blocks `charhub-ops setup` creates when missing: Secret blocks named in settings (and in prefect.yaml)
and the notification block of ``notify_block``.

A block's value comes only from the environment (settings): the database URL, ``CHARHUB_OPS_SCRATCH_URL``, the
contents of ``CHARHUB_OPS_AGE_IDENTITY_FILE``, the webhook ``CHARHUB_OPS_NOTIFY_URL`` — never from a command
line. An existing block is never overwritten (outcome ``exists``); a block nobody gave a value for is
``missing`` plus a warning naming the variable that creates it and a one-liner that asks for the value
without echoing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import prefect.blocks.notifications  # noqa: F401 - registers the notification block types
from prefect.blocks.core import Block, UnknownBlockType
from prefect.blocks.system import Secret
from pydantic import SecretStr

from charhub_ops.settings import Settings

__all__ = ["BlockSpec", "wanted_blocks", "ensure_blocks", "block_exists"]

Outcome = Literal["created", "exists", "missing"]


@dataclass(frozen=True)
class BlockSpec:
    """A block setup ensures: ``slug`` is ``secret/<name>`` or ``<type>/<name>`` (a notification block)."""

    slug: str
    value: SecretStr | None = field(repr=False)  # from the environment; None: nobody gave it
    variable: str  # what gives the value, for the warning
    users: tuple[str, ...] = ()  # who needs it (deployments, forms)


def wanted_blocks(settings: Settings, yaml_secrets: dict[str, list[str]] | None = None) -> list[BlockSpec]:
    """The blocks named in ``settings`` (with their values from the environment), plus the Secret blocks
    prefect.yaml names (``yaml_secrets``: name → deployments), which only settings can give a value."""
    users, boot = yaml_secrets or {}, settings.bootstrap
    specs = {
        boot.database_url_block: (settings.database.database_url, "CHARHUB_OPS_DATABASE_URL (or DATABASE_URL)"),
        boot.scratch_url_block: (boot.scratch_url, "CHARHUB_OPS_SCRATCH_URL"),
        boot.age_identity_block: (_file_text(settings.restore.age_identity_file), "CHARHUB_OPS_AGE_IDENTITY_FILE"),
    }
    if settings.pitr.repository:  # point-in-time recovery is on: its repository passphrase
        specs[settings.pitr.cipher_block] = (settings.pitr.cipher_pass, "CHARHUB_OPS_PITR_CIPHER_PASS")
    out = [BlockSpec(f"secret/{name}", value, variable, tuple(users.get(name, ["forms"])))
           for name, (value, variable) in specs.items()]
    out += [BlockSpec(f"secret/{name}", None, "", tuple(deps)) for name, deps in users.items() if name not in specs]
    if settings.runs.notify_block:
        out.append(BlockSpec(settings.runs.notify_block, boot.notify_url, "CHARHUB_OPS_NOTIFY_URL", ("automations",)))
    return out


def _file_text(path: str | None) -> SecretStr | None:
    try:
        return SecretStr(Path(path).read_text().strip()) if path else None
    except OSError:  # missing or unreadable: the block is "missing", the warning names the variable
        return None


def ensure_blocks(specs: list[BlockSpec]) -> tuple[dict[str, Outcome], list[str]]:
    """Create every block of ``specs`` that is missing and has a value; returns slug → outcome, warnings."""
    outcomes: dict[str, Outcome] = {}
    warnings: list[str] = []
    for spec in specs:
        if block_exists(spec.slug):
            outcomes[spec.slug] = "exists"
        elif spec.value is None:
            outcomes[spec.slug] = "missing"
            warnings.append(_missing(spec))
        else:
            problem = _create(spec)
            outcomes[spec.slug] = "missing" if problem else "created"
            warnings += [problem] if problem else []
    return outcomes, warnings


def _create(spec: BlockSpec) -> str | None:
    """Save the block (never over an existing one); a message when its type cannot be made from a URL."""
    kind, name = spec.slug.split("/", 1)
    value = spec.value.get_secret_value()
    if kind == "secret":
        Secret(value=value).save(name, overwrite=False)
        return None
    try:
        cls = Block.get_block_class_from_key(kind)
    except UnknownBlockType:
        cls = None
    if cls is None or "url" not in cls.model_fields:
        return (f"notification block {spec.slug!r} (CHARHUB_OPS_NOTIFY_BLOCK) is missing and a {kind} block is not "
                f"made from a URL: create it in the Prefect UI under Blocks, then run setup again")
    extra = {"name": name} if "name" in cls.model_fields else {}  # custom-webhook's display name
    cls(url=value, **extra).save(name, overwrite=False)
    return None


def _missing(spec: BlockSpec) -> str:
    kind, name = spec.slug.split("/", 1)
    used = f" (used by {', '.join(spec.users)})" if spec.users else ""
    if kind != "secret":
        return (f"notification block {spec.slug!r}{used} is missing: set {spec.variable} to its webhook URL and run "
                "setup again, or create it in the Prefect UI under Blocks")
    ask = (f"python -c \"import getpass; from prefect.blocks.system import Secret; "
           f"Secret(value=getpass.getpass('{name}: ')).save('{name}')\"")
    given = f"set {spec.variable} and run setup again, or " if spec.variable else ""
    return f"Secret block {name!r}{used} is missing: {given}create it without echoing the value: {ask}"


def block_exists(slug: str) -> bool:
    try:
        Block.load(slug)
    except ValueError:
        return False
    return True
