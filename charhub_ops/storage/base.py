"""The storage contract every repository backend implements (S3/R2, local directory, memory).

Keys are relative to the repository root and use ``/`` separators. The same contract tests
(tests/test_storage_contract.py) run against every backend, S3 against a real S3 server.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO

__all__ = [
    "ObjectInfo", "PutResult", "DeleteResult", "Storage", "ExactReader", "choose_part_size",
    "MIB", "MAX_PARTS",
]

MIB = 1024 * 1024
MAX_PARTS = 10_000
MAX_PART = 5 * 1024 * MIB

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class PutResult:
    key: str
    size: int
    part_size: int = 0


@dataclass
class DeleteResult:
    deleted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason (e.g. a bucket lock)


class Storage(ABC):
    """One repository. Every method raises StorageError (NotFoundError for a missing key) and nothing else."""

    url: str

    @abstractmethod
    def put_stream(self, key: str, stream: BinaryIO, *, expected_size: int | None = None,
                   progress: Progress | None = None) -> PutResult:
        """Write ``stream`` to ``key``. The object appears complete or not at all (a crash leaves at
        most an incomplete upload / temporary file that ``list`` does not show). Overwrites."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object atomically. Overwrites."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object; NotFoundError if it does not exist."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every complete object under ``prefix`` (all pages), in key order."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size and time of one object; NotFoundError if it does not exist."""

    @abstractmethod
    def delete_many(self, keys: Iterable[str]) -> DeleteResult:
        """Delete keys (batched); idempotent: a missing key counts as deleted. Refusals are
        reported in ``DeleteResult.failed``, not raised."""

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def full_url(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"


class ExactReader:
    """Wraps a stream whose ``read(n)`` may return short chunks so that ``read(n)`` returns exactly
    ``n`` bytes until EOF. R2 rejects multipart uploads whose parts (but the last) differ in size."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self._raw.read()
        chunks, size = [], 0
        while size < n:
            chunk = self._raw.read(n - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    def readable(self) -> bool:
        return True


def choose_part_size(expected_size: int | None, minimum: int, headroom: float = 2.0) -> int:
    """Smallest whole-MiB part size ≥ ``minimum`` such that ``expected_size × headroom`` fits in
    ``MAX_PARTS`` parts (a stream of unknown length cannot change part size half-way)."""
    need = math.ceil((expected_size or 0) * headroom / MAX_PARTS)
    size = max(minimum, math.ceil(need / MIB) * MIB)
    return min(size, MAX_PART)
