"""Form parameters of the pgBackRest flows (flows/pitr.py), in the style of flows/params.py: titled groups,
bounds and patterns the server checks, plain defaults, no secret (the passphrase lives in a Secret block
named by the setting ``pitr_cipher_block``). No Prefect import here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["PitrKind", "PitrTarget", "TableName", "KIND_HELP"]

PitrKind = Literal["full", "diff", "incr"]
KIND_HELP = ("full (the whole cluster), diff (what changed since the last full) or incr (since the last backup of "
             "any kind); a diff or incr with no full backup yet is made full")
# restore point names: pg_create_restore_point's text, without quotes or newlines
POINT_PATTERN = r"^[^'\n\r]{1,200}$"
# a table as `name` (public) or `schema.name`; quoted identifiers are not accepted in a form
TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$"
TableName = Annotated[str, StringConstraints(pattern=TABLE_PATTERN, max_length=127)]
_FORM = ConfigDict(extra="forbid", frozen=True)


class PitrTarget(BaseModel):
    """The point the cluster is restored to: the latest archived WAL, a time, or a named restore point."""

    model_config = ConfigDict(_FORM, title="Restore to")

    target_time: datetime | None = Field(
        None, title="Time (UTC)",
        description="Restore to this moment (commits at exactly this time included); empty: the latest")
    restore_point: Annotated[str, StringConstraints(pattern=POINT_PATTERN)] | None = Field(
        None, title="Restore point", description="A point made with pg_create_restore_point (instead of a time)")
    into: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        None, title="Into (new data directory or container)",
        description="A NEW empty data directory (local database) or the name of a new scratch container; "
                    "never the live one; default: <pg_path>_restore_<UTC time> or charhub-pitr-restore-<time>")
