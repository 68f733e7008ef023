"""The options of an S3/R2 repository, apart from the backend: settings and tasks build and pass them around
without importing boto3 (the backend, :mod:`charhub_ops.storage.s3`, is imported only for ``s3://`` URLs)."""

from __future__ import annotations

from pydantic import BaseModel, SecretStr

from charhub_ops.storage.base import MIB

__all__ = ["S3Options"]


class S3Options(BaseModel):
    """Credentials and tuning for one S3/R2 endpoint (secrets are SecretStr)."""

    endpoint_url: str | None = None  # None: boto3's own AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL handling
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    min_part_size: int = 8 * MIB
    concurrency: int = 4
    timeout: float = 60.0  # seconds to connect, and to wait for each answer / body chunk
    max_attempts: int = 5  # attempts per request, the first included (botocore standard-mode retries)
