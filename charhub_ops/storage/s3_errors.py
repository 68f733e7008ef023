"""Translation of boto3/botocore/urllib3 errors into the project's errors, with the transient flag.

Transient (retrying the same step may succeed): HTTP 5xx, throttling (SlowDown, 429, RequestTimeout,
ThrottlingException, InternalError, ServiceUnavailable), connection and read timeouts, a connection
closed or reset, a response body that broke off while streaming. Permanent: every other 4xx
(AccessDenied, NoSuchBucket, InvalidPart...), missing credentials, a bad setting.
:func:`translate` is pure (an exception in, an error out); :func:`s3_errors` applies it at a call site.
"""

from __future__ import annotations

from contextlib import contextmanager

import botocore.exceptions as bce
from boto3.exceptions import S3UploadFailedError
from urllib3.exceptions import HTTPError as URLLib3Error

from charhub_ops.errors import ConfigError, NotFoundError, OpsError, StorageError

__all__ = ["translate", "s3_errors", "TRANSIENT_CODES", "NO_CREDENTIALS"]

NO_CREDENTIALS = ("s3: no credentials: set R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY "
                  "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")

TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequests",
    "TooManyRequestsException", "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
    "ServiceUnavailableException", "BandwidthLimitExceeded", "PriorRequestNotComplete",
})

# network trouble: the request may not have reached the server, or its answer broke off
_TRANSIENT_TYPES = (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError,
                    bce.ConnectionClosedError, bce.ResponseStreamingError, bce.IncompleteReadError,
                    bce.ProxyConnectionError, URLLib3Error, ConnectionError, TimeoutError)
_CREDENTIALS = (bce.NoCredentialsError, bce.PartialCredentialsError, bce.CredentialRetrievalError)


def translate(op: str, key: str, exc: BaseException) -> OpsError:
    """The OpsError for ``exc`` raised by ``op`` on ``key`` (the caller raises it ``from exc``)."""
    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__cause__, Exception):
        return translate(op, key, exc.__cause__)
    if isinstance(exc, bce.ClientError):
        return _client_error(op, key, exc)
    if isinstance(exc, _CREDENTIALS):
        return ConfigError(NO_CREDENTIALS)
    if isinstance(exc, bce.SSLError):  # a certificate or protocol mismatch does not heal by itself
        return StorageError(f"s3: {op} {key}: TLS error: {exc}")
    if isinstance(exc, bce.EndpointConnectionError):
        return StorageError(f"s3: {op} {key}: cannot reach the endpoint {exc.kwargs.get('endpoint_url', '')}",
                            transient=True)
    if isinstance(exc, _TRANSIENT_TYPES):
        return StorageError(f"s3: {op} {key}: {_describe(exc)}", transient=True)
    return StorageError(f"s3: {op} {key}: {_describe(exc)}")


def _client_error(op: str, key: str, exc: bce.ClientError) -> OpsError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if code == "NoSuchBucket":
        return StorageError(f"s3: {op} {key}: bucket does not exist (setting repository)")
    if code in ("NoSuchKey", "404", "NotFound") or status == 404:
        return NotFoundError(f"s3: {op} {key}: not found")
    transient = code in TRANSIENT_CODES or status >= 500 or status == 429 or code in ("429", "500", "503")
    message = " ".join(str(error.get("Message", "")).split())
    return StorageError(f"s3: {op} {key}: {code or status}: {message}".rstrip(": "),
                        transient=transient)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__  # one line
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


@contextmanager
def s3_errors(op: str, key: str):
    """Translate every boto3/botocore/urllib3 error raised inside the block."""
    try:
        yield
    except OpsError:
        raise
    except (bce.BotoCoreError, bce.ClientError, S3UploadFailedError, URLLib3Error) as exc:
        raise translate(op, key, exc) from exc
