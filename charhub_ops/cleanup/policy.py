"""Row-retention policies: the YAML file's model, the safe ``where`` vocabulary, checks against the catalog.

A policy names a table, its timestamp column and an age (``older_than``, the retention duration syntax:
``90d``, ``2w``, ``1y6m``, ``36h``); an optional ``where`` is a mapping ``column: value | [values] | null |
"not null"`` — never SQL text. :func:`check_policies` validates every policy against the live catalog
(:mod:`.schema`) before anything runs and returns one :class:`TablePlan` per policy; a bad policy raises
one :class:`PolicyError` naming it. Pure but for the catalog read.

Foreign keys: the plan lists every table a delete reaches, at every level, with its path (:mod:`.schema`). A
policy is refused when that graph reaches a protected table (deleting or changing its rows; ``cascade: allowed``
does not change that), when its table has inheritance children (a DELETE on the parent deletes theirs too, and ctid
is not unique across them: one policy per child table), and when a cascade comes back into its table through other
tables. Other tables deleted or changed through the graph need ``cascade: allowed``. A cascade from the table to
itself (a thread's replies) needs nothing: the batches never take a row that has, anywhere below it through that
self-reference, a row the policy would not delete (:func:`.sweep.conditions`), so only rows the policy selects go.
Protected names (``protected_tables`` and :data:`ALWAYS_PROTECTED`) match with or without a schema and with or
without double quotes, in any case: ``Payment``, ``public.Payment`` and ``"public"."Payment"`` all protect
``public."Payment"``; a name without a schema protects that table in every schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from charhub_ops.cleanup.schema import CHANGES, Reach, TableShape
from charhub_ops.errors import PolicyError
from charhub_ops.retention.policy import Duration, parse_duration

__all__ = ["ALWAYS_PROTECTED", "is_not_null", "is_protected", "RowPolicy", "PolicyFile", "TablePlan",
           "load_policy_file", "check_policy", "index_hint"]

ALWAYS_PROTECTED = frozenset({"CreditTransaction", "_prisma_migrations"})
NOT_NULL = "not null"


def is_not_null(value: object) -> bool:
    """The ``"not null"`` condition (any case)."""
    return isinstance(value, str) and value.strip().lower() == NOT_NULL
Scalar = bool | int | float | str
_SQLISH = re.compile(r"[;'\"()=<>*\\]|--|/\*|\b(select|union|drop|delete|insert|update|or|and|exec)\b", re.I)
_TIME_TYPES = ("timestamp with time zone", "timestamp without time zone", "date")
_NUMERIC = ("smallint", "integer", "bigint", "numeric", "real", "double precision")
_TEXTUAL = ("text", "character varying", "character", "uuid", "citext")


class RowPolicy(BaseModel):
    """One table's retention rule (more keys are allowed in the file and ignored)."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)

    table: str = Field(min_length=1)
    schema_name: str = Field("public", alias="schema")
    timestamp_column: str = Field(min_length=1)
    older_than: Duration
    where: dict[str, Scalar | list[Scalar] | None] = {}
    batch_size: int = Field(5000, ge=1, le=100_000)
    max_rows: int | None = Field(None, ge=1)
    max_seconds: float | None = Field(None, gt=0)
    cascade: str | None = None  # "allowed": rows elsewhere may be deleted/changed by foreign keys

    @field_validator("older_than", mode="before")
    @classmethod
    def _duration(cls, value: object) -> Duration:
        if isinstance(value, Duration):
            return value
        try:
            return parse_duration(value if isinstance(value, str) else repr(value))
        except PolicyError as exc:  # pydantic reports ValueErrors with the field's location
            raise ValueError(str(exc).removeprefix("duration: ")) from None

    @field_validator("cascade")
    @classmethod
    def _cascade(cls, value: str | None) -> str | None:
        if value is not None and value != "allowed":
            raise ValueError("cascade: the only value is 'allowed'")
        return value

    @property
    def name(self) -> str:
        return self.table if self.schema_name == "public" else f"{self.schema_name}.{self.table}"


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    policies: list[RowPolicy] = Field(min_length=1)
    protected_tables: list[str] = []

    def protected(self) -> set[str]:
        return set(self.protected_tables) | ALWAYS_PROTECTED


class TablePlan(BaseModel):
    """A checked policy plus what the catalog says about its table (the plan shows all of it)."""

    policy: RowPolicy
    key: list[str]  # the batch key: ["ctid"] (plain table) or the primary key (partitioned table)
    cascades: list[str]  # every key a delete here follows (cascade, set null/default), with its path from the table
    restricts: list[str]  # references that would make a delete fail while a referencing row exists
    self_references: list[tuple[list[str], list[str]]] = []  # ON DELETE CASCADE to itself: (columns, referenced)
    index_warning: str | None = None
    reference_warning: str | None = None  # a self-reference whose columns no index starts with
    estimated_rows: int = 0


def _problem(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"][2:]) or "policy"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"


def load_policy_file(path: str | Path) -> PolicyFile:
    """Read and validate the YAML file's shape; PolicyError names the file and the policy."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"--policy: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"--policy: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"--policy: {path}: expected a mapping with a 'policies' list")
    try:
        return PolicyFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        label = f"policy #{loc[1] + 1}" if loc[:1] == ("policies",) and len(loc) > 1 else str(loc[0])
        table = _table_of(raw, loc)
        raise PolicyError(f"{path}: {label}{table}: {_problem(first)}") from None


def _table_of(raw: dict, loc: tuple) -> str:
    try:
        return f" ({raw['policies'][loc[1]]['table']})"
    except (KeyError, IndexError, TypeError):
        return ""


def _check_value(policy: RowPolicy, column: str, col_type: str, value: Scalar) -> None:
    fail = f"policy {policy.name}: where.{column}"
    if isinstance(value, str) and _SQLISH.search(value):
        raise PolicyError(f"{fail}: {value!r} looks like SQL; conditions are values only")
    if isinstance(value, bool):
        ok = col_type == "boolean"
    elif isinstance(value, int | float):
        ok = col_type in _NUMERIC
    else:
        ok = col_type in _TEXTUAL or col_type.startswith(("character", "USER-DEFINED"))
    if not ok:
        raise PolicyError(f"{fail}: {value!r} does not fit the column's type ({col_type})")


def _check_where(policy: RowPolicy, shape: TableShape) -> None:
    for column, value in policy.where.items():
        if column not in shape.columns:
            raise PolicyError(f"policy {policy.name}: where: unknown column {column!r} (a condition is "
                              f"{{column: value | [values] | null | \"not null\"}}, never SQL)")
        if value is None or is_not_null(value):
            continue
        values = value if isinstance(value, list) else [value]
        if not values:
            raise PolicyError(f"policy {policy.name}: where.{column}: an empty list matches nothing")
        for item in values:
            _check_value(policy, column, shape.columns[column], item)


def index_hint(policy: RowPolicy, shape: TableShape) -> str | None:
    """A warning when no index starts with the timestamp column: the cleanup then sweeps the whole table block by
    block every run (right when most rows expire; a waste when few do)."""
    if policy.timestamp_column in shape.leading_index_columns:
        return None
    index = f'CREATE INDEX CONCURRENTLY ON "{policy.table}" ("{policy.timestamp_column}")'
    return (f"{policy.name}: no index starts with {policy.timestamp_column!r}: each run sweeps the whole table; "
            f"when few rows expire this would help: {index}")


def _protected_key(name: str) -> tuple[str | None, str]:
    parts = [part.strip().strip('"').lower() for part in name.strip().split(".")]
    return (None, parts[0]) if len(parts) == 1 else (parts[-2], parts[-1])


def is_protected(names: list[tuple[str, str]] | tuple[tuple[str, str], ...], protected: set[str]) -> str | None:
    """The first of ``names`` ((schema, table) pairs) a protected name matches — with or without a schema and
    quotes, in any case; a name without a schema matches in every schema — or None."""
    keys = [_protected_key(p) for p in protected]
    for schema, table in names:
        if any(t == table.lower() and s in (None, schema.lower()) for s, t in keys):
            return table
    return None


def _check_graph(policy: RowPolicy, shape: TableShape, protected: set[str]) -> list[Reach]:
    """Refusals for the reference graph; returns the keys that delete or change rows (for the plan)."""
    changes = [r for r in shape.reaches if r.action in CHANGES]
    for reach in changes:
        if (hit := is_protected(reach.names, protected)) is not None:
            raise PolicyError(f"policy {policy.name}: deleting here reaches the protected table {hit} "
                              f"({reach.describe(policy.name)}): refused, whatever `cascade` says")
        if reach.returns:
            raise PolicyError(f"policy {policy.name}: a cascade comes back into the table through others "
                              f"({reach.describe(policy.name)}): it could delete rows the policy does not select; "
                              f"refused")
    others = [r for r in changes if not r.self_reference]  # a self-reference is a cascade, guarded in the batches
    if others and policy.cascade != "allowed":
        raise PolicyError(f"policy {policy.name}: deleting here also changes rows elsewhere "
                          f"({'; '.join(r.describe(policy.name) for r in others)}); add `cascade: allowed` to the "
                          f"policy if intended")
    return changes


def _reference_hint(policy: RowPolicy, shape: TableShape, self_references: list[Reach]) -> str | None:
    """A warning when no index starts with a self-reference's columns: each row a batch takes is checked for rows
    below it (:func:`.sweep.conditions`), a scan of the whole table per row without one."""
    missing = [r.columns for r in self_references if r.columns[0] not in shape.leading_index_columns]
    if not missing:
        return None
    create = "; ".join(f'CREATE INDEX CONCURRENTLY ON "{policy.table}" ({", ".join(map(_quoted, cols))})'
                       for cols in missing)
    return (f"{policy.name}: no index starts with the self-reference's {', '.join(missing[0])}: each row a "
            f"batch takes is checked for rows below it by scanning the whole table; {create}")


def _quoted(name: str) -> str:
    return f'"{name}"'


def check_policy(policy: RowPolicy, shape: TableShape | None, protected: set[str]) -> TablePlan:
    """Validate one policy against its table's shape (None = no such table). Raises PolicyError."""
    names = [(policy.schema_name, policy.table), *(shape.names if shape else [])]
    if (hit := is_protected(names, protected)) is not None:
        raise PolicyError(f"policy {policy.name}: the table is protected (protected_tables"
                          f"{'; financial records' if hit.lower() == 'credittransaction' else ''}): refused")
    if shape is None:
        raise PolicyError(f"policy {policy.name}: no such table")
    if shape.inheritance_children:
        raise PolicyError(f"policy {policy.name}: the table has inheritance children "
                          f"({', '.join(shape.inheritance_children)}): a delete here deletes their rows too; "
                          f"write a policy per child table instead")
    col_type = shape.columns.get(policy.timestamp_column)
    if col_type is None:
        raise PolicyError(f"policy {policy.name}: timestamp_column: unknown column {policy.timestamp_column!r}")
    if col_type not in _TIME_TYPES:
        raise PolicyError(f"policy {policy.name}: timestamp_column {policy.timestamp_column!r} is {col_type}, "
                          f"not a timestamp or date")
    _check_where(policy, shape)
    changes = _check_graph(policy, shape, protected)
    if not shape.key:
        raise PolicyError(f"policy {policy.name}: no primary key on a partitioned table")
    selfs = [r for r in changes if r.self_reference]
    return TablePlan(policy=policy, key=shape.key, cascades=[r.describe(policy.name) for r in changes],
                     restricts=[r.describe(policy.name) for r in shape.reaches if r.action not in CHANGES],
                     self_references=[(list(r.columns), list(r.referenced)) for r in selfs],
                     index_warning=index_hint(policy, shape), reference_warning=_reference_hint(policy, shape, selfs),
                     estimated_rows=shape.estimated_rows)
