"""Thin Prefect tasks over charhub_ops.deploy: inspect the services, run the health gate, keep releases and
guards, open and close the maintenance window, recreate containers, write the rollback report."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import NONE

from charhub_ops.deploy import recreate as rc
from charhub_ops.deploy.gate import Gate, run_gate
from charhub_ops.deploy.pins import pin
from charhub_ops.deploy.record import ServiceRecord, from_inspect
from charhub_ops.deploy.releases import Guard, Release, Releases, label_backup, open_releases
from charhub_ops.errors import ConfigError, OpsError
from charhub_ops.monitoring.checks import run_check
from charhub_ops.monitoring.dockerfacts import container_env_values, container_logs
from charhub_ops.monitoring.incident_model import Incident
from charhub_ops.monitoring.redact import redact
from charhub_ops.monitoring.report import render_report, write_report
from charhub_ops.monitoring.state import CheckState
from charhub_ops.monitoring.store import MonitorState
from charhub_ops.monitoring.windows import AdHocWindow
from charhub_ops.restore.engine import load_identities
from charhub_ops.settings import Settings
from tasks.common import RETRY, RepoSpec
from tasks.monitor import check_context, utcnow

__all__ = ["inspect_services", "health_gate", "label_pre_deploy_backup", "save_records", "mark_last_good",
           "save_guard", "open_window", "close_windows", "check_images", "recreate_service", "undo_recreates",
           "replaced_logs", "write_rollback_report", "deploy_artifact", "releases_of"]


def releases_of(repo: RepoSpec, settings: Settings) -> Releases:
    """The deploy records of ``repo``: sealed to the backup recipients, opened with the age identity
    (age_identity_file, else the Secret block age_identity_block) only when a sealed record is read."""
    def identities() -> list:
        if settings.restore.age_identity_file:
            return load_identities(settings.restore.age_identity_file, setting="age_identity_file")
        try:
            text = Secret.load(settings.bootstrap.age_identity_block).get()
        except ValueError:  # no such block
            raise ConfigError("deploy: the release records are age-encrypted: set CHARHUB_OPS_AGE_IDENTITY_FILE "
                              f"or create the Secret block {settings.bootstrap.age_identity_block}") from None
        return load_identities(text=text, setting=f"Secret block {settings.bootstrap.age_identity_block}")

    return open_releases(repo.open(), settings.backup.encrypt_to, identities)


@task(name="inspect-services", cache_policy=NONE, **RETRY)
def inspect_services(services: list[str], missing_ok: bool = False) -> list[ServiceRecord]:
    """The running release of each service, read through the Docker API (``missing_ok``: those that exist)."""
    client, now = rc.engine(), utcnow()
    try:
        found = [rc.inspect_container(client, s, missing_ok) for s in services]
    finally:
        client.close()
    return [from_inspect(attrs, now) for attrs in found if attrs is not None]


@task(name="health-gate", cache_policy=NONE)
def health_gate(checks: list, settings: Settings, passes: int, timeout: float, interval: float) -> tuple[Gate, str]:
    """Probe ``checks`` round after round (each judged alone: no earlier latencies) until every one passed
    ``passes`` times in a row, or ``timeout`` seconds went by."""
    def probe(check):
        return run_check(check, check_context(check, settings, CheckState(check_id=check.id), utcnow()))

    gate, outcome = run_gate(checks, probe, passes, timeout, interval, utcnow)
    get_run_logger().info("health gate %s after %d round(s), %.1f s: %s", outcome, gate.rounds, gate.seconds,
                          gate.failing or "every check passed")
    return gate, outcome


@task(name="label-backup", cache_policy=NONE, **RETRY)
def label_pre_deploy_backup(repo: RepoSpec, database: str, backup_id: str, label: str) -> None:
    label_backup(repo.open(), database, backup_id, label)


@task(name="save-records", cache_policy=NONE, **RETRY)
def save_records(repo: RepoSpec, records: list[ServiceRecord], recipients: list[str]) -> dict[str, str]:
    """Each record under deploy/record/… (age-encrypted to ``recipients`` when there are any); service → key."""
    if not recipients:
        get_run_logger().warning("deploy records hold the containers' environment in clear in the repository: "
                                 "set CHARHUB_OPS_ENCRYPT_TO to encrypt them")
    releases = open_releases(repo.open(), recipients)
    return {r.service: releases.save_record(r) for r in records}


@task(name="mark-last-good", cache_policy=NONE, **RETRY)
def mark_last_good(repo: RepoSpec, records: list[ServiceRecord], keys: dict[str, str], why: str) -> None:
    """Each record becomes its service's last-good, its image pinned (never dangling: the cleanup keeps it)."""
    releases, client = open_releases(repo.open()), rc.engine()
    try:
        for r in records:
            releases.set_last_good(Release(service=r.service, record_key=keys[r.service], image_id=r.image_id,
                                           tag=r.tag, at=r.recorded_at, why=why))
            get_run_logger().info("%s: last-good %s pinned as %s", r.service, r.image_id[:19], pin(client, r))
    finally:
        client.close()


@task(name="save-guard", cache_policy=NONE, **RETRY)
def save_guard(repo: RepoSpec, guard: Guard) -> None:
    open_releases(repo.open()).save_guard(guard)


@task(name="open-maintenance-window", cache_policy=NONE, **RETRY)
def open_window(store: MonitorState, checks: list[str], minutes: float, reason: str) -> AdHocWindow:
    """An ad hoc window for ``checks`` that ends by itself after ``minutes`` (the monitor suppresses their
    incidents until then)."""
    now = utcnow()
    window = AdHocWindow(id=f"deploy-{now:%Y%m%d%H%M%S}", checks=checks, start=now,
                         end=now + timedelta(minutes=minutes), reason=reason, by="charhub-ops deploy")
    store.save_window(window)
    return window


@task(name="close-maintenance-windows", cache_policy=NONE, **RETRY)
def close_windows(store: MonitorState, window_ids: list[str]) -> list[str]:
    """Close the windows still open among ``window_ids``; returns those closed."""
    now, closed = utcnow(), []
    for w in store.windows():
        if w.id in window_ids and w.end > now:
            store.delete_window(w.id)
            closed.append(w.id)
    return closed


@task(name="check-rollback-images", cache_policy=NONE, **RETRY)
def check_images(records: list[ServiceRecord]) -> dict[str, str]:
    """Every last-good image still exists (else DockerError, before anything changes); service → image ref."""
    client = rc.engine()
    try:
        return rc.image_refs(client, records)
    finally:
        client.close()


@task(name="recreate-service", cache_policy=NONE, task_run_name="recreate-{record.service}")
def recreate_service(record: ServiceRecord, image: str, expect_id: str | None, stop_timeout: int = 10) -> rc.Recreated:
    """Not retried: a failure has already put the old container back. ``expect_id``: the container found
    under the service's name when the rollback took the service's lock (acted on only if still there)."""
    client = rc.engine()
    try:
        done = rc.recreate(client, record, image, utcnow(), stop_timeout, expect_id)
    finally:
        client.close()
    get_run_logger().info("%s: %s → %s (%s); the replaced container is kept stopped as %s", record.service,
                          (done.from_image or "none")[:19], done.to_image[:19], record.tag, done.replaced)
    return done


@task(name="undo-recreates", cache_policy=NONE)
def undo_recreates(done: list[rc.Recreated]) -> list[str]:
    """Put back every service of ``done`` (last first): one line per service, what happened."""
    lines, client = [], rc.engine()
    try:
        for d in reversed(done):
            try:
                rc.undo(client, d)
                lines.append(f"{d.service}: put back on its deployed container ({(d.from_image or 'none')[:19]})")
            except OpsError as exc:
                lines.append(f"{d.service}: NOT put back: {exc}")
    finally:
        client.close()
    for line in lines:
        get_run_logger().warning("%s", line)
    return lines


@task(name="replaced-container-logs", cache_policy=NONE)
def replaced_logs(names: list[str], lines: int, secrets: list[str]) -> dict[str, str]:
    """The last log lines of each named container (the failed release), masked: ``secrets``, every value of
    the container's own environment, and secret-shaped text (:func:`redact`)."""
    out = {}
    for name in names:
        try:
            text = redact(container_logs(name, lines), [*secrets, *container_env_values(name)])
        except OpsError as exc:
            text = f"(logs unavailable: {exc})"
        out[name] = redact(text, secrets)
    return out


@task(name="write-rollback-report", cache_policy=NONE)
def write_rollback_report(path: str, inc: Incident, details: str) -> str:
    """The incident report in CharHub's template (atomically), and the same as a markdown artifact."""
    markdown = render_report(inc, utcnow(), details)
    write_report(Path(path), markdown)
    create_markdown_artifact(markdown, key="incident-deploy", description=f"incident {inc.id}")
    return path


@task(name="deploy-report", cache_policy=NONE)
def deploy_artifact(key: str, title: str, lines: list[str]) -> str:
    markdown = "\n".join([f"# {title}", "", *lines])
    create_markdown_artifact(markdown, key=key, description=title)
    return markdown
