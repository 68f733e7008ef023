"""``pitr restore``: restore the cluster to a target — the latest WAL, a time, a named restore point — into a
NEW data directory (or a new container), never the live one.

Contracts:

``Target``
    ``Target.latest()`` (``--type=default``: every archived WAL is replayed), ``Target.at(when)`` (an aware
    datetime; ``--type=time --target="YYYY-MM-DD HH:MM:SS[.ffffff]+00"``, always written in UTC so nothing
    depends on a time zone; commits at exactly ``when`` are included), ``Target.point(name)`` (a restore point
    made with ``pg_create_restore_point``; ``--type=name``). Time and name targets promote when reached
    (``--target-action=promote``): the copy opens read-write on a new timeline.
``check_into(into, live) -> Path``
    ConfigError (one line naming ``--into``) when the target directory is the live data directory
    (``pitr_pg_path``), inside it, contains it, or exists and is not empty. Nothing is written before it passes.
``restore_options(target, pg_path) -> list[str]`` (pure)
    The pgBackRest options: ``--pg1-path`` of the new directory, the target, and always ``--archive-mode=off``:
    a restored copy that archived into the production stanza would push a new timeline's WAL and history
    file into the live archive. ``--delta``/``--force`` are never used (they overwrite a directory in place).
``restore_local(pgb, target, into) -> RestoreResult``
    Local mode (the database runs on this host): creates ``into`` (0700, owner of the live data directory's
    parent, as pgBackRest runs as that user) and runs ``pgbackrest restore`` through ``pgb``. On failure the
    half-restored files are removed (the directory was new or empty: nothing of anyone else's is lost).
    Before anything is written, ``preflight``: a missing stanza or an empty repository is one line.
Container mode (the database in a container) lives in :mod:`charhub_ops.pitr.scratch`
(``ScratchContainer``): a new container from ``pitr_image`` with a new named volume.
"""

from __future__ import annotations

import os
import pwd
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from charhub_ops.errors import ConfigError, DatabaseError
from charhub_ops.pitr.command import PgBackRest
from charhub_ops.pitr.info import StanzaInfo
from charhub_ops.settings import PitrSettings

__all__ = ["Target", "RestoreResult", "preflight", "check_into", "restore_options", "restore_local", "restore_into",
           "data_owner",
           "target_text"]


def target_text(when: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS[.ffffff]+00`` in UTC (pgBackRest's and PostgreSQL's recovery_target_time)."""
    if when.tzinfo is None:
        raise ConfigError("--target-time: a time zone is required (e.g. 2026-12-05T01:30:00Z)")
    utc = when.astimezone(UTC)
    fraction = f".{utc.microsecond:06d}" if utc.microsecond else ""
    return f"{utc:%Y-%m-%d %H:%M:%S}{fraction}+00"


@dataclass(frozen=True)
class Target:
    kind: Literal["latest", "time", "name"]
    time: datetime | None = None
    name: str | None = None

    @classmethod
    def latest(cls) -> Target:
        return cls("latest")

    @classmethod
    def at(cls, when: datetime) -> Target:
        target_text(when)  # refuses a naive time
        return cls("time", time=when.astimezone(UTC))

    @classmethod
    def point(cls, name: str) -> Target:
        if not name or "\n" in name or "'" in name:
            raise ConfigError("restore point: a non-empty name without quotes or newlines is required")
        return cls("name", name=name)

    def options(self) -> list[str]:
        if self.kind == "latest":
            return ["--type=default"]  # pgBackRest refuses --target-action with it: the end of WAL promotes
        target = target_text(self.time) if self.kind == "time" else self.name
        return [f"--type={self.kind}", f"--target={target}", "--target-action=promote"]

    def describe(self) -> str:
        if self.kind == "latest":
            return "latest"
        return f"time {target_text(self.time)}" if self.kind == "time" else f"restore point {self.name}"


@dataclass(frozen=True)
class RestoreResult:
    target: str  # Target.describe()
    into: str  # the new data directory (local) or volume (container)
    seconds: float
    container: str | None = None  # container mode: the scratch container holding the copy


def restore_options(target: Target, pg_path: str) -> list[str]:
    return [f"--pg1-path={pg_path}", *target.options(), "--archive-mode=off"]


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def check_into(into: str | os.PathLike, live: str | os.PathLike) -> Path:
    """The new data directory, absolute and resolved; ConfigError naming ``--into`` when it is not safe."""
    if not str(into).strip():
        raise ConfigError("--into: a new, empty data directory is required")
    new, current = Path(os.path.realpath(into)), Path(os.path.realpath(live))
    if _inside(new, current) or _inside(current, new):
        raise ConfigError(f"--into: {new} is (or overlaps) the live data directory {current} (pitr_pg_path); "
                          "pitr restore never writes into the live cluster: restore into a new directory")
    if new.is_file() or (new.is_dir() and any(new.iterdir())):
        raise ConfigError(f"--into: {new} exists and is not empty; pitr restore only writes into a new, "
                          "empty directory")
    return new


def data_owner(pitr: PitrSettings) -> pwd.struct_passwd:
    """The user pgBackRest and PostgreSQL run as: the owner of the live data directory (or, once it is
    gone, of its parent, then of the configuration file), else ``postgres``."""
    for path in (pitr.pg_path, os.path.dirname(pitr.pg_path.rstrip("/")), pitr.config_path):
        try:
            return pwd.getpwuid(os.stat(path).st_uid)
        except (OSError, KeyError):
            continue
    return pwd.getpwnam("postgres")


def _create(new: Path, owner: pwd.struct_passwd) -> None:
    try:
        new.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(new, owner.pw_uid, owner.pw_gid)
    except OSError as exc:
        raise ConfigError(f"--into: cannot create {new}: {exc.strerror}") from exc


def _restorer(pgb: PgBackRest, new: Path) -> PgBackRest:
    """``pgb`` running as the new directory's owner: the live directory may be gone (the instance died)."""
    return PgBackRest(pgb.pitr.model_copy(update={"pg_path": str(new)}), secrets=pgb.secrets)


def preflight(pgb: PgBackRest) -> StanzaInfo:
    """The stanza, which must exist and hold a backup (else one line naming what to run)."""
    stanza = pgb.info()
    if not stanza.exists:
        raise pgb.fail("restore", "ERROR: [055]: unable to load info file: stanza missing (stanza-create)")
    if stanza.newest is None:
        raise DatabaseError(f"pgbackrest restore (stanza {pgb.pitr.stanza}): the repository holds no backup yet: "
                            "run `charhub-ops pitr backup` first")
    return stanza


def _clear(new: Path, existed: bool) -> None:
    if existed:
        for child in new.iterdir():
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
    else:
        shutil.rmtree(new, ignore_errors=True)


def restore_local(pgb: PgBackRest, target: Target, into: str | os.PathLike) -> RestoreResult:
    """Restore ``target`` into the new directory ``into`` on this host (see the module docstring)."""
    new = check_into(into, pgb.pitr.pg_path)
    existed = new.exists()
    _create(new, data_owner(pgb.pitr))
    started = time.monotonic()
    try:
        runner = _restorer(pgb, new)
        preflight(runner)
        runner.run("restore", *restore_options(target, str(new)))
    except BaseException:
        _clear(new, existed)
        raise
    return RestoreResult(target=target.describe(), into=str(new), seconds=time.monotonic() - started)


def restore_into(pgb: PgBackRest, target: Target, into: str) -> RestoreResult:
    """``restore_local``, or with the database in a container (``pgb.container``) a new container holding a new
    volume ``into`` (:func:`charhub_ops.pitr.scratch_container.restore_container`)."""
    if pgb.container:
        from charhub_ops.pitr.scratch_container import restore_container

        return restore_container(pgb, target, into)
    return restore_local(pgb, target, into)
