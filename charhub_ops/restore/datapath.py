"""The data path of a restore (no Prefect): read a backup object — size and SHA-256 of the stored bytes,
age decryption, zstd decompression — and give the dump to pg_restore, in one of two modes:

    stream  GET → SHA-256 → age → zstd → pg_restore reading stdin (one job), into the NEW database.
            Download, decryption and restore overlap; no work-dir space. The checksum is known at the
            end of the object: a mismatch fails the restore after pg_restore, and the caller drops the
            new database (nothing else was written).
    file    the same chain into a file in the work dir, checked before any database write, then
            ``pg_restore -j N`` from the file (parallel; needs the raw dump size free in the work dir).

Errors: damaged or undecryptable data → VerificationError; a storage error (e.g. a read failing half-way,
transient) passes unchanged, never relabelled as a wrong key; a full or unwritable work dir → ConfigError
naming CHARHUB_OPS_WORK_DIR (permanent: never retried). A partial work file is always removed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import zstandard

from charhub_ops.backup.manifest import Manifest, ObjectRef
from charhub_ops.errors import ConfigError, OpsError, VerificationError
from charhub_ops.fmt import human_bytes
from charhub_ops.settings import env_name
from charhub_ops.storage import Storage
from charhub_ops.streams import CountingReader, decompress, decrypt

__all__ = ["MODES", "VerifiedReader", "fetch_verified", "work_file", "check_work_space", "room_for", "choose_mode",
           "restore_jobs", "pg_restore", "pg_restore_stream"]

CHUNK = 1024 * 1024
MODES = ("auto", "stream", "file")
FILE_MODE_MIN_JOBS = 2  # pg_restore -j2 from a file beat one streamed job on 2 vCPUs (bench/README.md)
Progress = Callable[[int], None]


def room_for(raw_size: int) -> int:
    """Free bytes the work dir needs for a dump of ``raw_size``: the dump + 5 % + 16 MiB of headroom."""
    return raw_size + raw_size // 20 + 16 * 1024 * 1024


class VerifiedReader:
    """The decompressed content of one backup object, read straight from the repository.

    ``read`` raises VerificationError for damaged or undecryptable data and passes storage errors through
    unchanged. At EOF (or on ``finish()``, which reads what is left) the stored object's size and SHA-256
    are compared with the manifest: VerificationError on a mismatch. A context manager."""

    def __init__(self, storage: Storage, manifest: Manifest, identities: list | None = None,
                 progress: Progress | None = None, ref: ObjectRef | None = None) -> None:
        from charhub_ops.restore.engine import load_identities

        if manifest.encrypted and not identities:
            load_identities(None)  # raises the ConfigError that asks for --identity
        self.ref, self.label = ref or manifest.dump, manifest.backup_id
        self._raw = storage.open(self.ref.key)
        self._hashed = CountingReader(_Progress(self._raw, progress), "sha256")
        self._decrypted = decrypt(self._hashed, identities) if manifest.encrypted else None
        self._plain = decompress(self._decrypted or self._hashed)
        self._head = b""
        self.finished = False

    def prime(self) -> None:
        """Read the first chunk now (kept for ``read``): a wrong key, a bad age header or a stream that is
        not zstd fail here, before the caller writes anything anywhere."""
        self._head = self._head or self.read(CHUNK)

    def read(self, n: int = CHUNK) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        with self._data_errors():
            data = self._plain.read(n if n and n > 0 else CHUNK)
        if not data:
            self.finish()
        return data

    def readable(self) -> bool:
        return True

    def finish(self) -> None:
        """Read the rest of the object (zstd stops at its frame end) and check size and SHA-256."""
        if self.finished:
            return
        with self._data_errors():
            while self._plain.read(CHUNK):
                pass
            while self._decrypted is not None and self._decrypted.read(CHUNK):
                pass  # at its EOF age's thread has ended: the object below is read by this thread alone
        while self._hashed.read(CHUNK):
            pass
        self.finished = True
        got, digest = self._hashed.count, self._hashed.hexdigest()
        if got != self.ref.size_bytes or digest != self.ref.sha256:
            raise VerificationError(
                f"{self.label}: checksum mismatch of {self.ref.key.rsplit('/', 1)[-1]}: got {got} bytes sha256 "
                f"{digest[:16]}…, manifest says {self.ref.size_bytes} bytes sha256 {self.ref.sha256[:16]}…")

    @contextmanager
    def _data_errors(self) -> Iterator[None]:
        try:
            yield
        except zstandard.ZstdError as exc:
            raise VerificationError(f"{self.label}: cannot read the dump: {exc}") from exc
        except VerificationError as exc:  # raised by age only: storage errors keep their own type
            raise VerificationError(f"{self.label}: cannot decrypt (wrong identity?): {exc}") from exc

    def close(self) -> None:
        for stream in (self._plain, self._decrypted, self._raw):
            if stream is not None:
                try:
                    stream.close()
                except (OSError, OpsError):
                    pass

    def __enter__(self) -> VerifiedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Progress:
    def __init__(self, raw, progress: Progress | None) -> None:
        self.raw, self.progress = raw, progress

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if self.progress and data:
            self.progress(len(data))
        return data


# --- file mode ---------------------------------------------------------------------------------------


@contextmanager
def _work_dir(path: Path) -> Iterator[None]:
    """OSError on the work dir (ENOSPC, EACCES, a missing directory) → one permanent ConfigError."""
    try:
        yield
    except OSError as exc:
        env = env_name("work_dir")
        raise ConfigError(f"work_dir ({env}): cannot write {path}: {exc.strerror or exc}; free space there, "
                          f"point {env} elsewhere, or stream the dump ({env_name('restore_mode')}=stream)") from exc


def work_file(work_dir: str, backup_id: str, suffix: str) -> Path:
    """A new, uniquely named empty file in the work dir (concurrent restores of one backup never share one)."""
    with _work_dir(Path(work_dir)):
        fd, name = tempfile.mkstemp(prefix=f"charhub-ops-{backup_id}-", suffix=suffix, dir=work_dir)
    os.close(fd)
    return Path(name)


def check_work_space(work_dir: str, need: int) -> None:
    """ConfigError (before anything is downloaded or created) when the work dir lacks ``need`` bytes."""
    with _work_dir(Path(work_dir)):
        free = shutil.disk_usage(work_dir).free
    if free < room_for(need):
        env = env_name("work_dir")
        raise ConfigError(f"work_dir ({env}): {work_dir} has {human_bytes(free)} free, the dump needs "
                          f"{human_bytes(room_for(need))} with headroom: free space, point {env} elsewhere, "
                          f"or stream the dump ({env_name('restore_mode')}=stream)")


def fetch_verified(storage: Storage, manifest: Manifest, dest: Path, identities: list | None = None,
                   progress: Progress | None = None, ref: ObjectRef | None = None) -> Path:
    """Decompress the verified dump (or another object ``ref`` of the backup, e.g. its globals) into ``dest``.

    Raises VerificationError (mismatch, truncation, wrong key, corrupt data), storage errors unchanged,
    ConfigError for a full work dir; ``dest`` is removed on any failure."""
    try:
        with VerifiedReader(storage, manifest, identities, progress, ref) as src:
            with _work_dir(dest):
                out = open(dest, "wb")  # closed below; every write's error is translated
            with out:
                while data := src.read(CHUNK):
                    with _work_dir(dest):
                        out.write(data)
                with _work_dir(dest):
                    out.flush()
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


def restore_jobs(jobs: int) -> int:
    """pg_restore -j workers: the setting, or min(4, CPUs) when it is 0."""
    return jobs or min(4, os.cpu_count() or 1)


def choose_mode(setting: str, work_dir: str, raw_size: int, jobs: int, container: str | None) -> tuple[str, str]:
    """(``stream`` | ``file``, why). ``auto``: a file only where ``pg_restore -j`` can use it — a local
    pg_restore with at least FILE_MODE_MIN_JOBS workers — and the work dir holds the raw dump."""
    if setting in ("stream", "file"):
        return setting, f"{env_name('restore_mode')}={setting}"
    if container:
        return "stream", "pg_restore runs in a container: it reads a pipe either way (no -j)"
    workers = restore_jobs(jobs)
    if workers < FILE_MODE_MIN_JOBS:
        return "stream", f"{workers} pg_restore job(s): streaming overlaps the download with the restore"
    free = shutil.disk_usage(work_dir).free if os.path.isdir(work_dir) else 0
    if free < room_for(raw_size):
        return "stream", f"the work dir has {human_bytes(free)} free, the dump is {human_bytes(raw_size)}"
    return "file", f"pg_restore -j{workers} from a file in the work dir ({human_bytes(free)} free)"


# --- pg_restore ------------------------------------------------------------------------------------------


def _restore_cmd(tools, no_owner: bool) -> list[str]:
    cmd = ["pg_restore", "--exit-on-error", "--no-password", "-d", tools.url.dbname]
    return cmd + ["--no-owner", "--no-privileges"] if no_owner else cmd


def pg_restore(tools, dump: Path, jobs: int = 0, no_owner: bool = False) -> None:
    """Restore ``dump`` into the database of ``tools``' URL; ``-j`` when the file is local to pg_restore."""
    cmd = _restore_cmd(tools, no_owner)
    if tools.method == "local":
        tools.run([*cmd, "-j", str(restore_jobs(jobs)), str(dump)])
    else:
        tools.run_with_input(cmd, str(dump))  # streamed into the container: no -j from a pipe


def pg_restore_stream(tools, source: VerifiedReader, no_owner: bool = False) -> None:
    """pg_restore (one job) reading ``source`` on stdin, on this host or in the container of ``tools``.

    A worker thread copies ``source`` into a pipe that pg_restore reads (as ``/dev/fd/N``: Linux). An error
    of ``source`` (storage, VerificationError) wins over pg_restore's complaint about its cut input; after
    pg_restore succeeded, the rest of the object is read and its checksum checked."""
    rfd, wfd = os.pipe()
    try:
        fcntl.fcntl(wfd, fcntl.F_SETPIPE_SZ, CHUNK)  # fewer wake-ups than 64 KiB; best effort
    except OSError:
        pass
    failed: list[BaseException] = []
    feeder = threading.Thread(target=_feed, args=(source, wfd, failed), name="pg-restore-stdin", daemon=True)
    feeder.start()
    restore_error: OpsError | None = None
    try:
        tools.run_with_input(_restore_cmd(tools, no_owner), f"/dev/fd/{rfd}")
    except OpsError as exc:
        restore_error = exc
    finally:
        os.close(rfd)  # a feeder blocked on a full pipe of an exited pg_restore gets EPIPE
        feeder.join()
    if failed:
        raise failed[0]
    if restore_error is not None:
        raise restore_error
    source.finish()


def _feed(source: VerifiedReader, wfd: int, failed: list[BaseException]) -> None:
    sink = os.fdopen(wfd, "wb")
    try:
        while data := source.read(CHUNK):
            sink.write(data)
    except BrokenPipeError:
        pass  # pg_restore stopped reading: its exit status says why
    except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits for pg_restore
        failed.append(exc)
    finally:
        try:
            sink.close()
        except OSError:
            pass
