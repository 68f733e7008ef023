"""The physical backups beside the logical ones: what ``backups list`` and the capacity report read of pgBackRest.

``stanza_info(settings, warn) -> StanzaInfo | None``
    pgBackRest's ``info`` of the stanza when ``pitr_repository`` is set (None when it is not). When pgBackRest
    cannot answer (not set up on this host, repository unreachable...), ``warn`` gets its one line and the
    result is None: the logical backups are still listed and reported.
``physical_backups(settings, warn) -> list[dict]`` / ``pitr_usage(settings, warn) -> dict | None``
    The rows of :func:`charhub_ops.pitr.summary.physical_rows` and the capacity section of
    :func:`charhub_ops.pitr.summary.repository_usage` for that stanza.

Read only; no Prefect. The passphrase is not needed: pgBackRest reads it from its own configuration.
"""

from __future__ import annotations

from collections.abc import Callable

from charhub_ops.errors import OpsError
from charhub_ops.pitr.info import StanzaInfo
from charhub_ops.pitr.summary import physical_rows, repository_usage
from charhub_ops.settings import Settings

__all__ = ["stanza_info", "physical_backups", "pitr_usage"]

Warn = Callable[[str], object]


def stanza_info(settings: Settings, warn: Warn) -> StanzaInfo | None:
    if not settings.pitr.repository:
        return None
    from charhub_ops.pitr.ops import connect

    try:
        info = connect(settings).pgb.info()
    except OpsError as exc:
        warn(f"physical backups (pgBackRest) not listed: {exc}")
        return None
    if not info.exists:
        warn(f"physical backups (pgBackRest): stanza '{info.name}' does not exist in {settings.pitr.repository} "
             f"yet (`charhub-ops pitr setup`)")
    return info


def physical_backups(settings: Settings, warn: Warn) -> list[dict]:
    info = stanza_info(settings, warn)
    return physical_rows(info, settings.pitr.repository or "") if info else []


def pitr_usage(settings: Settings, warn: Warn) -> dict | None:
    info = stanza_info(settings, warn)
    return repository_usage(info, settings.pitr.repository or "") if info and info.exists else None
