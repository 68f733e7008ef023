"""S3 / Cloudflare R2 repository (``s3://bucket/prefix``) through boto3.

R2 rules respected here (see FIELD-NOTES): checksums only ``when_required``; multipart parts all of
one size (``ExactReader``); part size chosen from the expected size; listing paginated; own SHA-256
(the multipart ETag is not an MD5). Deletes are batched by 1,000 (DeleteObjects).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import BinaryIO

import boto3
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from charhub_ops.errors import ConfigError
from charhub_ops.settings.shared import endpoint_url_problem
from charhub_ops.storage.base import (
    DeleteResult,
    ExactReader,
    ObjectInfo,
    Progress,
    PutResult,
    Storage,
    choose_part_size,
)
from charhub_ops.storage.s3_errors import NO_CREDENTIALS
from charhub_ops.storage.s3_errors import s3_errors as _errors
from charhub_ops.storage.s3_options import S3Options

__all__ = ["S3Options", "S3Storage", "make_s3_client"]


def make_s3_client(opts: S3Options):
    """The one client factory: R2-safe checksum settings, standard retries, explicit credentials if given."""
    if (opts.access_key_id is None) != (opts.secret_access_key is None):
        raise ConfigError("s3: set both R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY (only one is set)")
    if opts.endpoint_url and (problem := endpoint_url_problem(opts.endpoint_url)):
        raise ConfigError(f"r2_endpoint_url (R2_ENDPOINT_URL): {problem}")
    session = _session(
        aws_access_key_id=opts.access_key_id.get_secret_value() if opts.access_key_id else None,
        aws_secret_access_key=opts.secret_access_key.get_secret_value() if opts.secret_access_key else None,
        region_name=opts.region,
    )
    if session.get_credentials() is None:
        raise ConfigError(NO_CREDENTIALS)
    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"total_max_attempts": opts.max_attempts, "mode": "standard"},
        connect_timeout=opts.timeout,
        read_timeout=opts.timeout,
        s3={"addressing_style": "path"} if opts.endpoint_url else None,
        max_pool_connections=max(10, opts.concurrency * 2),
    )
    return session.client("s3", endpoint_url=opts.endpoint_url,
                          region_name=opts.region or session.region_name or "us-east-1", config=config)


_LOADER_LOCK = threading.Lock()
_LOADER = None  # botocore's data loader, shared by every client of the process


def _session(**kwargs) -> boto3.session.Session:
    """A new session (its own credentials, region, configuration) on the process's one botocore data loader: the
    loader reads and caches botocore's JSON service models, most of a new client's cost (~90 ms of CPU, ~10 ms
    with the models cached; a CLI backup makes three clients). The models are read-only data."""
    global _LOADER
    with _LOADER_LOCK:
        core = botocore.session.Session()
        if _LOADER is None:
            _LOADER = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _LOADER)
        session = boto3.session.Session(botocore_session=core, **kwargs)
        _LOADER.search_paths[:] = dict.fromkeys(_LOADER.search_paths)  # boto3 appended its data path again
    return session


class S3Storage(Storage):
    def __init__(self, bucket: str, prefix: str = "", opts: S3Options | None = None, client=None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.opts = opts or S3Options()
        self.client = client or make_s3_client(self.opts)
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    def transfer_config(self, expected_size: int | None) -> TransferConfig:
        part = choose_part_size(expected_size, self.opts.min_part_size)
        config = TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                                max_concurrency=self.opts.concurrency, use_threads=True)
        # bounded memory: at most ``concurrency`` parts buffered for a non-seekable stream
        config.max_in_memory_upload_chunks = self.opts.concurrency
        return config

    def put_stream(self, key: str, stream: BinaryIO, *, expected_size: int | None = None,
                   progress: Progress | None = None) -> PutResult:
        """Multipart for large streams. On failure s3transfer aborts the multipart upload; if the store
        cannot be reached to abort it, prune aborts it once it is stale (``list_incomplete_uploads``)."""
        config = self.transfer_config(expected_size)
        counter = _Counter(progress)
        with _errors("put", self._key(key)):
            self.client.upload_fileobj(ExactReader(stream), self.bucket, self._key(key),
                                       Config=config, Callback=counter)
        return PutResult(key=key, size=counter.total, part_size=config.multipart_chunksize)

    def put_bytes(self, key: str, data: bytes) -> None:
        with _errors("put", self._key(key)):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def open(self, key: str) -> BinaryIO:
        """The body stream; an error while reading it is a transient StorageError (a new GET may succeed)."""
        with _errors("get", self._key(key)):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        return io.BufferedReader(_Body(body, self._key(key)), 1024 * 1024)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        with _errors("list", self._key(prefix)):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(key=self._rel(obj["Key"]), size=obj["Size"], modified=obj["LastModified"])

    def stat(self, key: str) -> ObjectInfo:
        with _errors("stat", self._key(key)):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return ObjectInfo(key=key, size=head["ContentLength"], modified=head["LastModified"])

    def delete_many(self, keys: Iterable[str]) -> DeleteResult:
        result = DeleteResult()
        batch: list[str] = []
        for key in keys:
            batch.append(key)
            if len(batch) == 1000:
                self._delete_batch(batch, result)
                batch = []
        if batch:
            self._delete_batch(batch, result)
        return result

    def _delete_batch(self, keys: list[str], result: DeleteResult) -> None:
        objects = [{"Key": self._key(k)} for k in keys]
        with _errors("delete", f"{len(keys)} keys"):
            reply = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
        failed = {self._rel(e["Key"]): f"{e.get('Code')}: {e.get('Message', '')}" for e in reply.get("Errors", [])}
        result.failed.update(failed)
        result.deleted.extend(k for k in keys if k not in failed)

    def list_incomplete_uploads(self, prefix: str = "") -> Iterator[tuple[str, str, datetime]]:
        """(key, upload id, initiated) of multipart uploads never completed (interrupted backups)."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        with _errors("list-uploads", self._key(prefix)):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for up in page.get("Uploads", []):
                    yield self._rel(up["Key"]), up["UploadId"], up["Initiated"]

    def abort_upload(self, key: str, upload_id: str) -> None:
        with _errors("abort-upload", self._key(key)):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(key), UploadId=upload_id)


class _Counter:
    def __init__(self, progress: Progress | None) -> None:
        self.total = 0
        self.progress = progress

    def __call__(self, n: int) -> None:
        self.total += n
        if self.progress:
            self.progress(n)


class _Body(io.RawIOBase):
    """A GET body whose read errors (timeouts, a connection reset mid-body) are StorageErrors."""

    def __init__(self, body, key: str) -> None:
        self._body, self._key = body, key

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        with _errors("read", self._key):
            return self._body.readinto(buf)  # at EOF botocore checks the length (IncompleteReadError)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
