"""The base every settings group shares: where values come from and how a field is named.

A group reads the environment and ``.env`` under its own prefix (``CHARHUB_OPS_`` + the group's part, e.g.
``CHARHUB_OPS_CLEANUP_``), so the variable of a field is ``prefix + field`` upper-cased: the names are the
ones operators already set, without ``__`` nesting. CharHub's own names (``DATABASE_URL``, ``R2_*``) are
accepted through :func:`aliases`. A setting's *name* (in error messages, ``load_settings`` overrides and
docs/configuration.md) is its variable without ``CHARHUB_OPS_``, lower-cased: ``cleanup_lock_timeout``.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AliasChoices, BeforeValidator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["PREFIX", "BLOCK_NAME", "Group", "CommaList", "aliases"]

PREFIX = "CHARHUB_OPS_"
BLOCK_NAME = "^[a-z0-9][a-z0-9-]*$"  # Prefect block document names


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# A comma-separated list in the environment (``a, b``), a list in Python.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split)]


def aliases(name: str, *extra: str) -> AliasChoices:
    """``CHARHUB_OPS_<NAME>`` plus CharHub's own variable names (an alias bypasses the group's prefix)."""
    return AliasChoices(PREFIX + name.upper(), *extra)


class Group(BaseSettings):
    """One pipeline's (or one shared system's) settings. ``part``: the group's piece of the prefix."""

    part: ClassVar[str] = ""
    title: ClassVar[str] = ""
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_file=".env", extra="ignore", populate_by_name=True)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.model_config = {**cls.model_config, "env_prefix": PREFIX + cls.part.upper()}

    @classmethod
    def setting_name(cls, field: str) -> str:
        """``lock_timeout`` of the cleanup group → ``cleanup_lock_timeout``."""
        return cls.part.lower() + field

    @classmethod
    def env_names(cls, field: str) -> list[str]:
        """Every variable that sets ``field``, the primary one first."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return [str(choice) for choice in alias.choices]
        return [PREFIX + cls.setting_name(field).upper()]
