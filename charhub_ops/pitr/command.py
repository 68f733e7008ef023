"""Run pgBackRest where PostgreSQL runs — on this host or in the database container — and classify its errors.

``PgBackRest(pitr, *, container=None, client=None, secrets=())``
    ``container`` set: every command is a Docker exec, as the owner of ``pitr_pg_path`` there, in that container
    (:class:`charhub_ops.docker_exec.ContainerExec`; its ``DockerError``s pass through). Unset: a subprocess on
    this host, as the owner of ``pitr_pg_path`` when we are root (pgBackRest must run as the cluster's owner).
    ``secrets`` (``Settings.secret_values()``) are masked in every message.
``run(command, *options) -> str``
    ``pgbackrest --config=<pitr_config_path> --stanza=<pitr_stanza> <options> <command>``; returns stdout.
    A failure raises :class:`PgBackRestError` (a ``DatabaseError``) with one line ``pgbackrest <command>:
    <what to fix>``, classified by pgBackRest's ``ERROR: [NNN]`` code (``src/build/error/error.yaml``):
    no configuration file yet (055 on ``pitr_config_path``), wrong passphrase (029 format / 095 crypto on an
    info file), missing stanza (055 on an info file),
    repository unreachable (049 host-connect, 101 service, 039 protocol: transient — pgBackRest already
    retried), TLS (095 on a certificate), access denied (105), archive timeout (082), lock held by another
    pgBackRest (050: transient), PostgreSQL unreachable (056: transient). ``.kind`` names the class.
``json(command, *options) -> object``
    ``run`` with ``--output=json``, parsed; unparseable output raises a permanent ``DatabaseError``.
``info() -> StanzaInfo``
    ``info --output=json`` of our stanza. pgBackRest answers ``info`` with exit 0 even when it could not
    read the repository: status 99 (the repository's ``[ErrorName] message``), 4 (different cipher) and 5
    (database mismatch) raise as ``run`` would; a missing stanza (1, 3) is returned (``.exists`` False).
``read_info(text, stanza, *, config="", secrets=()) -> StanzaInfo``: the pure part of ``info``.
``with_config(path) -> PgBackRest``: the same runner on another configuration file (``setup``'s candidate);
``remove_config()`` removes that file.
``install_config(text)``
    Writes the configuration file (``pitr_config_path`` unless ``with_config``) atomically (temporary file →
    rename), mode 0640, owned by the cluster's owner; in the container through an exec as root with the text
    on stdin (never on a command line).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json as jsonlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable

from charhub_ops.errors import ConfigError, DatabaseError
from charhub_ops.monitoring.redact import redact
from charhub_ops.pitr.info import StanzaInfo, parse_info
from charhub_ops.settings.pipelines import PitrSettings

__all__ = ["PgBackRest", "PgBackRestError", "classify", "read_info", "ERROR_NAMES"]

_ERROR_LINE = re.compile(r"ERROR: \[(\d+)\]: (.*)")
_REPO_STATUS = re.compile(r"\[(\w+)\] (.*)", re.S)
ERROR_NAMES = {"FormatError": 29, "ProtocolError": 39, "FileMissingError": 55, "HostConnectError": 49,
               "LockAcquireError": 50, "DbConnectError": 56, "ArchiveTimeoutError": 82, "CryptoError": 95,
               "ServiceError": 101, "AccessError": 105}
_UNREACHABLE, _TRANSIENT = {39, 49, 101}, {39, 49, 50, 56, 101}


class PgBackRestError(DatabaseError):
    """A pgBackRest command failed. ``code``: its error code (None when it printed none); ``kind``:
    not-configured, passphrase, missing-stanza, unreachable, tls, access, archive-timeout, lock, database or other."""

    def __init__(self, message: str, *, code: int | None, kind: str, transient: bool = False) -> None:
        super().__init__(message, transient=transient)
        self.code, self.kind = code, kind


def _kind(code: int | None, message: str, detail: str, config: str) -> tuple[str, str]:
    """(kind, what to fix) for one pgBackRest error."""
    info_file = "info file" in message
    if code == 55 and config and f"'{config}'" in message:
        return "not-configured", f"no configuration at {config} (pitr_config_path): run `charhub-ops pitr setup`"
    if code in (29, 95) and info_file:
        return "passphrase", ("cannot decrypt the repository's info files: wrong passphrase (pitr_cipher_pass / "
                              "its Secret block), or the repository was encrypted with another one")
    if code == 95:
        return "tls", f"{message} (pitr_s3_ca_file, pitr_s3_verify_tls)"
    if code == 55 and (info_file or "stanza-create" in detail):
        return "missing-stanza", "the stanza does not exist in the repository yet: run `charhub-ops pitr setup`"
    if code in _UNREACHABLE:
        return "unreachable", f"repository unreachable: {message} (pitr_repository, r2_endpoint_url)"
    if code == 105:
        return "access", f"access denied: {message} (r2_access_key_id, r2_secret_access_key)"
    if code == 82:
        return "archive-timeout", (f"{message}: PostgreSQL's archive_command must push WAL with this "
                                   f"configuration (see PostgreSQL's log)")
    if code == 50:
        return "lock", f"another pgBackRest command holds this stanza's lock ({message})"
    if code == 56:
        return "database", f"cannot connect to PostgreSQL: {message} (pitr_socket_path, database_url's port)"
    return "other", f"[{code:03d}] {message}" if code is not None else message


def classify(command: str, stderr: str, *, exit_code: int | None = None, stanza: str = "", config: str = "",
             secrets: Iterable[str] = ()) -> PgBackRestError:
    """The one-line error for a failed ``pgbackrest <command>`` from its stderr (secrets masked)."""
    match = _ERROR_LINE.search(stderr)
    if match:
        code, message = int(match.group(1)), match.group(2).strip()
    else:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        code, message = None, (lines[-1] if lines else f"exit {exit_code} without a message")
    kind, text = _kind(code, message, stderr, config)
    where = f" (stanza {stanza})" if stanza and kind in ("missing-stanza", "lock") else ""
    return PgBackRestError(redact(f"pgbackrest {command}{where}: {text}", secrets), code=code, kind=kind,
                           transient=code in _TRANSIENT)


def _repo_error(raw: list, stanza: StanzaInfo) -> str:
    """The repository's status message as an ``ERROR: [NNN]: ...`` text (info reports errors as data)."""
    if stanza.status_code == 4:
        return "ERROR: [095]: unable to load info file: the repository's cipher differs from the configuration"
    entry = next((r for r in raw if isinstance(r, dict) and r.get("name") == stanza.name), {})
    for repo in entry.get("repo") or []:
        message = str((repo.get("status") or {}).get("message", ""))
        if match := _REPO_STATUS.match(message):
            code = ERROR_NAMES.get(match.group(1), 0)
            return f"ERROR: [{code:03d}]: {match.group(2).splitlines()[0]}\n{match.group(2)}"
    return f"ERROR: [000]: {stanza.status_message or 'status ' + str(stanza.status_code)}"


def read_info(text: str, stanza: str, *, config: str = "", secrets: Iterable[str] = ()) -> StanzaInfo:
    """``stanza`` from ``info --output=json``; statuses 4, 5 and 99 raise the classified ``PgBackRestError``
    (pgBackRest's ``info`` exits 0 when it could not read the repository)."""
    found = [s for s in parse_info(text) if s.name == stanza]
    if not found:
        raise DatabaseError(f"pgbackrest info: no answer for stanza {stanza}")
    if found[0].status_code in (4, 5, 99):
        detail = _repo_error(jsonlib.loads(text, strict=False), found[0])
        raise classify("info", detail, stanza=stanza, config=config, secrets=secrets)
    return found[0]


class PgBackRest:
    def __init__(self, pitr: PitrSettings, *, container: str | None = None, client=None,
                 secrets: Iterable[str] = (), config_path: str | None = None) -> None:
        self.pitr, self.container = pitr, container
        self.config_path = config_path or pitr.config_path
        self.secrets = [s for s in secrets if s]
        self._exec, self._owner = None, None
        if container:
            from charhub_ops.docker_exec import ContainerExec

            self._exec = ContainerExec(container, client)

    def with_config(self, path: str) -> PgBackRest:
        """The same runner reading the configuration at ``path`` (a candidate, before it goes live)."""
        other = copy.copy(self)
        other.config_path = path
        return other

    def argv(self, command: str, *options: str) -> list[str]:
        return ["pgbackrest", f"--config={self.config_path}", f"--stanza={self.pitr.stanza}", *options, command]

    def fail(self, command: str, stderr: str, exit_code: int | None = None) -> PgBackRestError:
        return classify(command, stderr, exit_code=exit_code, stanza=self.pitr.stanza, config=self.config_path,
                        secrets=self.secrets)

    def run(self, command: str, *options: str) -> str:
        argv = self.argv(command, *options)
        if self._exec is not None:
            return self._run_container(command, argv)
        proc = self._run_local(argv)
        if proc.returncode != 0:
            raise self.fail(command, proc.stderr, proc.returncode) from None
        return proc.stdout

    def container_owner(self) -> str:
        """``uid:gid`` of ``pitr_pg_path`` in the container (pgBackRest runs as it; numeric, so it works
        whatever the image's user names)."""
        if self._owner is None:
            try:
                out = self._exec.run(["stat", "-c", "%u:%g", self.pitr.pg_path])
            except DatabaseError:
                raise ConfigError(f"pitr_pg_path: '{self.pitr.pg_path}' does not exist in container "
                                  f"{self.container}") from None
            self._owner = out.decode().strip()
        return self._owner

    def _run_container(self, command: str, argv: list[str]) -> str:
        stream = self._exec.stream(argv, user=self.container_owner())
        try:
            with stream:
                return stream.readall().decode("utf-8", "replace")
        except DatabaseError as exc:
            raise self.fail(command, stream.stderr.decode("utf-8", "replace")) from exc

    def owner(self) -> tuple[int, int]:
        """uid and gid of ``pitr_pg_path`` on this host."""
        try:
            st = os.stat(self.pitr.pg_path)
        except OSError as exc:
            raise ConfigError(f"pitr_pg_path: '{self.pitr.pg_path}': {exc.strerror} on this host (set "
                              f"CHARHUB_OPS_DOCKER_CONTAINER when PostgreSQL runs in a container)") from None
        return st.st_uid, st.st_gid

    def _run_local(self, argv: list[str]) -> subprocess.CompletedProcess:
        uid, gid = self.owner()
        as_owner = {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 and uid != 0 else {}
        try:
            return subprocess.run(argv, capture_output=True, text=True, errors="replace", **as_owner)
        except FileNotFoundError:
            raise ConfigError("pgbackrest: not installed on this host (apt-get install pgbackrest)") from None

    def json(self, command: str, *options: str) -> object:
        text = self.run(command, "--output=json", *options)
        try:
            return jsonlib.loads(text, strict=False)
        except ValueError:
            raise DatabaseError(f"pgbackrest {command}: --output=json gave unexpected output") from None

    def info(self) -> StanzaInfo:
        return read_info(self.run("info", "--output=json"), self.pitr.stanza, config=self.config_path,
                         secrets=self.secrets)

    def install_config(self, text: str) -> None:
        if self._exec is not None:
            script = ('set -e; umask 027; d=$(dirname "$1"); [ -d "$d" ] || { mkdir -p "$d"; chown "$2" "$d"; }; '
                      'cat > "$1.tmp"; chown "$2" "$1.tmp"; chmod 0640 "$1.tmp"; mv "$1.tmp" "$1"')
            self._exec.run_with_input(["sh", "-c", script, "sh", self.config_path, self.container_owner()],
                                      io.BytesIO(text.encode()), user="0")
            return
        self._write_local(text)

    def _write_local(self, text: str) -> None:
        uid, gid = self.owner()
        path = self.config_path
        folder = os.path.dirname(os.path.abspath(path))
        try:
            if not os.path.isdir(folder):
                os.makedirs(folder, mode=0o750)
                if os.geteuid() == 0:
                    os.chown(folder, uid, gid)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".pgbackrest.conf.")
            with os.fdopen(fd, "w") as out:
                os.fchmod(out.fileno(), 0o640)
                if os.geteuid() == 0:
                    os.fchown(out.fileno(), uid, gid)
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise ConfigError(f"pitr_config_path: cannot write '{path}': {exc.strerror}") from None

    def remove_config(self) -> None:
        """Remove the configuration file (a refused candidate); no error when it is gone."""
        if self._exec is not None:
            self._exec.run(["rm", "-f", self.config_path], user="0")
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.config_path)
