"""In-memory repository for fast unit tests (same contract as the real backends)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import BinaryIO

from charhub_ops.errors import NotFoundError
from charhub_ops.storage.base import DeleteResult, ObjectInfo, Progress, PutResult, Storage

__all__ = ["MemoryStorage"]


class MemoryStorage(Storage):
    def __init__(self, name: str = "test") -> None:
        self.url = f"memory://{name}"
        self.objects: dict[str, tuple[bytes, datetime]] = {}

    def put_stream(self, key: str, stream: BinaryIO, *, expected_size: int | None = None,
                   progress: Progress | None = None) -> PutResult:
        buf = bytearray()
        while chunk := stream.read(1024 * 1024):
            buf += chunk
            if progress:
                progress(len(chunk))
        self.objects[key] = (bytes(buf), datetime.now(UTC))
        return PutResult(key=key, size=len(buf))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.objects[key] = (bytes(data), datetime.now(UTC))

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self._get(key)[0])

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield self.stat(key)

    def stat(self, key: str) -> ObjectInfo:
        data, modified = self._get(key)
        return ObjectInfo(key=key, size=len(data), modified=modified)

    def delete_many(self, keys: Iterable[str]) -> DeleteResult:
        result = DeleteResult()
        for key in keys:
            self.objects.pop(key, None)
            result.deleted.append(key)
        return result

    def _get(self, key: str) -> tuple[bytes, datetime]:
        try:
            return self.objects[key]
        except KeyError:
            raise NotFoundError(f"memory: {key}: not found") from None
