"""What every task module shares: the run's settings, the retry policy, the repository spec passed between
tasks and the database URL (setting or Prefect Secret block).

Settings of a run (:func:`run_settings`): read once per flow run — by the flow, with its parameters as
overrides, as its first step — and kept for that run's tasks, retry decisions and failure hooks.

Retry policy (``RETRY``, spread into ``@task(...)``): only errors that say they are transient
(``OpsError.transient``: network, 5xx, throttling, serialization failures, lock timeouts) are
retried, as many times as the run's setting ``task_retries`` says, after ``task_retry_delay``
seconds, then 4x and 10x as long. Bad input, failed checks, a full disk, a missing container or a
programming error fail at once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from prefect.blocks.system import Secret
from prefect.runtime import flow_run
from pydantic import BaseModel

from charhub_ops.errors import ConfigError, OpsError
from charhub_ops.pgurl import PgUrl, parse_pg_url
from charhub_ops.settings import DatabaseSettings, Settings, StorageSettings, load_settings
from charhub_ops.storage import S3Options, Storage, open_storage

__all__ = ["RepoSpec", "transient_only", "RETRY", "RETRY_DELAYS", "MAX_RETRIES", "is_transient", "setting",
           "run_settings", "repo_spec", "database_url"]

MAX_RETRIES = 3  # the setting's upper bound; the decorator allows that many, the condition stops earlier
_FACTORS = (1, 4, 10)


class _Delays(list):
    """Backoff read from the settings when Prefect asks for it (decorators are built at import time)."""

    def __getitem__(self, index):  # type: ignore[override]
        factor = super().__getitem__(index)
        return factor * setting("task_retry_delay", 30.0)


RETRY_DELAYS = _Delays(_FACTORS)
_LOCK = threading.Lock()


_RUNS: OrderedDict[str, Settings] = OrderedDict()  # flow run id → its settings (the last 64 runs)


def run_settings(**overrides: object) -> Settings:
    """The settings of the current flow run. With ``overrides`` (a flow's first step: its parameters, None =
    not given) they are read and kept for the run; without, the run's kept settings (read now if none).
    Outside a flow run they are read each time. Raises ConfigError naming the bad setting."""
    run_id = flow_run.id
    with _LOCK:
        if run_id and not overrides and run_id in _RUNS:
            return _RUNS[run_id]
    settings = load_settings(**overrides)
    if run_id:
        with _LOCK:
            _RUNS[run_id] = settings
            while len(_RUNS) > 64:
                _RUNS.popitem(last=False)
    return settings


def setting(name: str, default):
    """A setting of the run's ``runs`` group (``task_retries`` …); ``default`` when the settings are invalid."""
    try:
        return getattr(run_settings().runs, name)
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


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


def repo_spec(storage: StorageSettings) -> RepoSpec:
    """The repository of ``storage`` with its URL made absolute (file://./x → file:///abs/x)."""
    s3 = storage.s3_options()
    opened = open_storage(storage.repository, s3)  # validates the scheme, bucket and credentials
    return RepoSpec(url=opened.url, s3=s3)


def database_url(database: DatabaseSettings, secret_block: str | None = None) -> PgUrl:
    """The database URL: from the Prefect Secret block ``secret_block`` when given, else the setting."""
    if secret_block:
        try:
            value = Secret.load(secret_block).get()
        except ValueError as exc:
            raise ConfigError(f"database_url_secret: no Prefect Secret block named '{secret_block}'") from exc
        return parse_pg_url(str(value), setting=f"Secret block '{secret_block}'")
    if database.database_url is None:
        raise ConfigError("database_url: not set (set DATABASE_URL or CHARHUB_OPS_DATABASE_URL, "
                          "or pass --database-url)")
    return parse_pg_url(database.database_url.get_secret_value())
