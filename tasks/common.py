"""What every task module shares: the retry policy and the repository spec passed between tasks.

Retry policy (``RETRY``, spread into ``@task(...)``): only errors that say they are transient
(``OpsError.transient``: network, 5xx, throttling, serialization failures, lock timeouts) are
retried, as many times as the setting ``task_retries`` says (read when the task fails, so the
environment of the run decides), after ``task_retry_delay`` seconds, then 4x and 10x as long.
Bad input, failed checks, a full disk, a missing container or a programming error fail at once.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel

from charhub_ops.errors import ConfigError, OpsError
from charhub_ops.settings import load_settings
from charhub_ops.storage import S3Options, Storage, open_storage

__all__ = ["RepoSpec", "transient_only", "RETRY", "RETRY_DELAYS", "MAX_RETRIES", "is_transient", "setting"]

MAX_RETRIES = 3  # the setting's upper bound; the decorator allows that many, the condition stops earlier
_FACTORS = (1, 4, 10)


class _Delays(list):
    """Backoff read from the settings when Prefect asks for it (decorators are built at import time)."""

    def __getitem__(self, index):  # type: ignore[override]
        factor = super().__getitem__(index)
        return factor * setting("task_retry_delay", 30.0)


RETRY_DELAYS = _Delays(_FACTORS)


def setting(name: str, default):
    """A setting's value from the environment of the run (``default`` when the settings are invalid)."""
    try:
        return getattr(load_settings(), name)
    except ConfigError:
        return default


def is_transient(exc: BaseException) -> bool:
    """True only for errors known to be transient (they say so); everything else is permanent."""
    return isinstance(exc, OpsError) and exc.transient


def transient_only(task, task_run, state) -> bool:
    """retry_condition_fn: retry a transient failure, at most ``task_retries`` (setting) times."""
    if task_run.run_count > setting("task_retries", 0):
        return False
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classified, not swallowed: the state keeps the error
        return is_transient(exc)
    return False


RETRY = {"retries": MAX_RETRIES, "retry_delay_seconds": RETRY_DELAYS, "retry_condition_fn": transient_only}


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
