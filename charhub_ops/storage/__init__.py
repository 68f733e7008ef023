"""Repository backends behind one interface; :func:`open_storage` picks one from a URL.

The S3/R2 backend (:class:`S3Storage`, boto3) is imported on first use — an ``s3://`` URL or the name
``S3Storage`` — so a local repository never pays for importing boto3 (~0.1–0.3 s of CPU per process)."""

from __future__ import annotations

from urllib.parse import urlsplit

from charhub_ops.errors import ConfigError
from charhub_ops.storage.base import (
    DeleteResult,
    ExactReader,
    ObjectInfo,
    PutResult,
    Storage,
    choose_part_size,
)
from charhub_ops.storage.local import LocalStorage
from charhub_ops.storage.memory import MemoryStorage
from charhub_ops.storage.s3_options import S3Options

__all__ = [
    "Storage", "ObjectInfo", "PutResult", "DeleteResult", "ExactReader", "choose_part_size",
    "LocalStorage", "MemoryStorage", "S3Storage", "S3Options", "open_storage",
]


def open_storage(url: str, s3: S3Options | None = None, setting: str = "repository") -> Storage:
    """``s3://bucket/prefix`` → S3Storage; ``file:///abs``, ``file://./rel`` or a plain path → LocalStorage."""
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if len(parts.netloc) < 3:
            raise ConfigError(f"{setting}: '{url}' has no valid bucket name (s3://bucket/prefix)")
        from charhub_ops.storage.s3 import S3Storage

        return S3Storage(parts.netloc, parts.path.strip("/"), s3)
    if url.startswith("file://"):
        return LocalStorage(url.removeprefix("file://") or ".")
    if "://" in url:
        raise ConfigError(f"{setting}: unsupported scheme in '{url}' (use s3://bucket/prefix or file:///path)")
    return LocalStorage(url)


def __getattr__(name: str):
    if name == "S3Storage":
        from charhub_ops.storage.s3 import S3Storage

        return S3Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
