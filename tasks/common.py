"""What every task module shares: retry policy and the repository spec passed between tasks."""

from __future__ import annotations

import threading

from pydantic import BaseModel

from charhub_ops.errors import ConfigError, NotFoundError, PolicyError, VerificationError
from charhub_ops.settings import load_settings
from charhub_ops.storage import S3Options, Storage, open_storage

__all__ = ["RepoSpec", "transient_only", "RETRY_DELAYS"]

RETRY_DELAYS = [30, 120, 300]  # backoff between task retries (seconds)
PERMANENT = (ConfigError, PolicyError, VerificationError, NotFoundError)


def _max_retries() -> int:
    try:
        return load_settings().task_retries
    except ConfigError:
        return 0


class RepoSpec(BaseModel):
    """A repository URL and its S3/R2 options (SecretStr inside): enough for any task to open it."""

    url: str
    s3: S3Options = S3Options()

    def open(self) -> Storage:
        """The repository; one client per process and repository (a boto3 client costs 60–270 ms)."""
        key = (self.url, self.s3.model_dump_json(), _secret(self.s3.access_key_id),
               _secret(self.s3.secret_access_key))
        with _LOCK:
            if key not in _OPEN:
                _OPEN[key] = open_storage(self.url, self.s3)
            return _OPEN[key]


_OPEN: dict[tuple, Storage] = {}
_LOCK = threading.Lock()


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


def transient_only(task, task_run, state) -> bool:
    """retry_condition_fn: retry storage/database/docker failures, never bad input or failed checks,
    at most ``task_retries`` (setting) times."""
    if task_run.run_count > _max_retries():
        return False
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False
