"""Local-directory repository (``file:///path``; the embedded default is ``./backups``).

Writes are atomic: temporary file → fsync → rename → fsync of the directory.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from charhub_ops.errors import NotFoundError, StorageError
from charhub_ops.storage.base import DeleteResult, ObjectInfo, Progress, PutResult, Storage

__all__ = ["LocalStorage"]

PARTIAL = ".partial-"
CHUNK = 1024 * 1024


@contextmanager
def _errors(op: str, key: str):
    try:
        yield
    except FileNotFoundError as exc:
        raise NotFoundError(f"file: {op} {key}: not found") from exc
    except OSError as exc:
        raise StorageError(f"file: {op} {key}: {exc.strerror or exc}") from exc


class LocalStorage(Storage):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self._resolved = self.root.resolve()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self._resolved not in path.parents and path != self._resolved:
            raise StorageError(f"file: key {key!r} escapes the repository")
        return path

    def put_stream(self, key: str, stream: BinaryIO, *, expected_size: int | None = None,
                   progress: Progress | None = None) -> PutResult:
        path = self._path(key)
        tmp = path.with_name(f"{path.name}{PARTIAL}{uuid.uuid4().hex[:8]}")
        size = 0
        with _errors("put", key):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(tmp, "wb") as out:
                    while chunk := stream.read(CHUNK):
                        out.write(chunk)
                        size += len(chunk)
                        if progress:
                            progress(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(path.parent)
        return PutResult(key=key, size=size)

    def put_bytes(self, key: str, data: bytes) -> None:
        import io

        self.put_stream(key, io.BytesIO(data))

    def open(self, key: str) -> BinaryIO:
        with _errors("open", key):
            return open(self._path(key), "rb")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Files deleted while the listing runs (a concurrent prune) are left out, not raised."""
        start = self.root / prefix.rpartition("/")[0]  # walk only below the prefix's directory
        with _errors("list", prefix):
            keys = sorted(k for k in self._walk(start) if PARTIAL not in k and k.startswith(prefix))
        for key in keys:
            if info := self._info_if_exists(key, "list"):
                yield info

    def list_partial(self) -> Iterator[ObjectInfo]:
        """Temporary files left by interrupted writes (for prune's orphan cleanup)."""
        with _errors("list", PARTIAL):
            keys = sorted(k for k in self._walk(self.root) if PARTIAL in k.rpartition("/")[2])
        for key in keys:
            if info := self._info_if_exists(key, "list"):
                yield info

    def _walk(self, start: Path) -> Iterator[str]:
        """Keys of every file below ``start``; a directory removed meanwhile is skipped, any
        other error (permission denied, I/O error) raised."""
        for dirpath, _dirnames, filenames in os.walk(start, onerror=_raise_unless_vanished):
            for name in filenames:
                yield Path(dirpath, name).relative_to(self.root).as_posix()

    def _info_if_exists(self, key: str, op: str) -> ObjectInfo | None:
        try:
            with _errors(op, key):
                return self._info(key, self.root / key)
        except NotFoundError:
            return None

    def stat(self, key: str) -> ObjectInfo:
        with _errors("stat", key):
            return self._info(key, self._path(key))

    def delete_many(self, keys: Iterable[str]) -> DeleteResult:
        result = DeleteResult()
        for key in keys:
            try:
                self._path(key).unlink(missing_ok=True)
                result.deleted.append(key)
            except OSError as exc:
                result.failed[key] = exc.strerror or str(exc)
        return result

    def remove_empty_dirs(self) -> None:
        """Remove empty directories, deepest first. Only ``rmdir``: a directory that a concurrent
        backup fills meanwhile is not empty any more and stays."""
        with _errors("cleanup", "empty directories"):
            dirs = sorted((d for d, _, _ in os.walk(self.root, onerror=_raise_unless_vanished)), reverse=True)
            for dirpath in dirs:
                if Path(dirpath) != self.root:
                    _rmdir_if_empty(dirpath)

    @staticmethod
    def _info(key: str, path: Path) -> ObjectInfo:
        st = path.stat()
        return ObjectInfo(key=key, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC))


def _raise_unless_vanished(exc: OSError) -> None:
    if not isinstance(exc, FileNotFoundError | NotADirectoryError):  # nothing (left) below that path
        raise exc


def _rmdir_if_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
