"""Deploy guard and rollback: record before, gate after, roll back on a failed gate.

``pre_deploy_flow`` (before CharHub's deploy): plan (the services' checks in the monitor config, each with an
HTTP check) → record each service's running release through the Docker API (image id, tag, env, ports,
mounts, networks, labels, restart policy, health check…) → a backup labelled ``pre-deploy-<release>`` →
releases that answer their checks now become last-good → a maintenance window over the services' checks
that closes itself after ``deploy_window_minutes`` → report.

``post_deploy_flow`` (after it): the health gate — every check of the services passes ``deploy_gate_passes``
times in a row within ``deploy_gate_timeout`` (real answers, never a container state) → passed: the new
releases become last-good and the window closes; failed: ``charhub.deploy.gate-failed`` (the ``rollback``
deployment's trigger), a notification, and the run fails.

``rollback_flow`` (manual, or on a failed gate): plan (last-good release of each service; every image must
still exist, else nothing is touched) → preview → with ``restore_data`` an approval in the UI → under the
services' locks: a service already on its last-good image whose checks pass is left alone (all of them:
the rollback changes nothing and says so) → recreate each other container from its last-good record
(volumes untouched), all or none: a failure puts back every service already recreated → optionally
restore the pre-deploy backup through restore's ``replace`` path → health gate →
``charhub.deploy.rolled-back``, an incident report in CharHub's template (a failed deployment is an
incident; a rollback that failed and put everything back too), a notification.

Pre, post and rollback hold ``service-<name>`` for each service (a global concurrency limit of one slot,
:func:`tasks.locks.resource_lock`): ``deploy post || rollback`` and the rollback deployment that the same
``charhub.deploy.gate-failed`` starts run one after the other, and the second finds the service on
last-good.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from prefect import flow, get_run_logger

from charhub_ops.deploy.gate import Gate, check_ids, service_checks
from charhub_ops.deploy.releases import Guard, pre_deploy_label
from charhub_ops.deploy.rollback_report import incident_report_path, rollback_incident
from charhub_ops.errors import ConfigError, OpsError, VerificationError
from charhub_ops.monitoring.config import MonitorConfig, load_config
from charhub_ops.monitoring.incident_model import ActionResult
from charhub_ops.monitoring.redact import env_values
from charhub_ops.settings import Settings
from flows.approval import Decision, approve
from flows.backup import backup_flow
from flows.params import Repository, RestoreSource, RestoreTarget, StateStore
from flows.restore import restore_flow
from tasks.common import repo_spec, run_settings
from tasks.deploy import (
    check_images,
    close_windows,
    deploy_artifact,
    health_gate,
    inspect_services,
    label_pre_deploy_backup,
    mark_last_good,
    open_window,
    recreate_service,
    releases_of,
    replaced_logs,
    save_guard,
    save_records,
    undo_recreates,
    write_rollback_report,
)
from tasks.locks import resource_lock
from tasks.monitor import open_state, utcnow
from tasks.notify import emit, notify, notify_failure

__all__ = ["pre_deploy_flow", "post_deploy_flow", "rollback_flow", "GATE_FAILED", "ROLLED_BACK"]

GATE_FAILED = "charhub.deploy.gate-failed"
ROLLED_BACK = "charhub.deploy.rolled-back"
Services = list[str]
# Parameters take plain defaults, described in each flow's docstring (Prefect's form reads its Args section): a
# deployment run given only some parameters then gets the defaults of the others, not pydantic FieldInfo objects.


def _setup(services: Services, config: str | None, repository: str | None):
    if not services:
        raise ConfigError("deploy: name at least one service (--service NAME)")
    settings = run_settings(repository=repository)
    cfg = load_config(config or settings.monitor.config)
    return settings, cfg, service_checks(cfg, services), repo_spec(settings.storage)


def _gate(settings, by_service: dict, passes: int | None = None, timeout: float | None = None) -> tuple[Gate, str]:
    checks = [c for checks in by_service.values() for c in checks]
    return health_gate(checks, settings, passes or settings.deploy.gate_passes,
                       settings.deploy.gate_timeout if timeout is None else timeout, settings.deploy.gate_interval)


def _healthy(gate: Gate, checks: list) -> bool:
    return all(gate.streaks.get(c.id, 0) >= gate.passes for c in checks)


@flow(name="deploy-pre", on_failure=[notify_failure])
def pre_deploy_flow(services: Services, release: str | None = None, backup: bool = True, config: str | None = None,
                    state: str | None = None, repository: str | None = None) -> dict:
    """Record the running releases, back up, open the maintenance window; returns what was recorded.

    Args:
        services: Service container names (as in the monitor config's `container:`).
        release: The tag or git sha being deployed (names the backup pre-deploy-<release>).
        backup: Take the pre-deploy backup of the database.
        config: The monitor YAML; default setting monitor_config.
        state: The monitor's state store (windows, incidents); default setting monitor_state.
        repository: Repository for backups and release records; default from settings.
    """
    settings, cfg, by_service, repo = _setup(services, config, repository)
    store = open_state(settings, state)  # before acting: a window no worker would read fails here, in one line
    with resource_lock("service", *services):
        return _pre(settings, by_service, repo, services, release, backup, store)


def _pre(settings, by_service: dict, repo, services: Services, release: str | None, backup: bool, store) -> dict:
    records = inspect_services(services)
    release = release or f"sha-{records[0].image_id.split(':')[-1][:12]}"
    label = pre_deploy_label(release)
    taken = backup_flow(repository=repo.url)[0] if backup else None
    if taken:
        label_pre_deploy_backup(repo, taken["database"], taken["backup_id"], label)
    keys = save_records(repo, records, settings.backup.encrypt_to)
    gate, _ = _gate(settings, by_service, passes=1, timeout=0)  # one round: does the running release answer?
    good = [r for r in records if _healthy(gate, by_service[r.service])]
    mark_last_good(repo, good, keys, "answered its health checks at pre-deploy")
    window = open_window(store, check_ids(by_service), settings.deploy.window_minutes,
                         f"deploy {release}")
    save_guard(repo, Guard(release=release, label=label, at=records[0].recorded_at, services=services, records=keys,
                           database=taken["database"] if taken else None,
                           backup_id=taken["backup_id"] if taken else None, window_id=window.id,
                           window_end=window.end))
    rows = [{"service": r.service, "image_id": r.image_id, "tag": r.tag, "record": keys[r.service],
             "last_good": r in good} for r in records]
    _pre_artifact(release, label, taken, window, rows)
    return {"release": release, "label": label, "backup_id": taken["backup_id"] if taken else None,
            "window_id": window.id, "window_end": window.end.isoformat(), "services": rows}


def _pre_artifact(release: str, label: str, taken: dict | None, window, rows: list[dict]) -> None:
    deploy_artifact("deploy-pre", f"Pre-deploy guard for {release}", [
        f"- backup: {taken['backup_id'] + ' (' + label + ')' if taken else 'none (backup off)'}",
        f"- maintenance window `{window.id}` over {', '.join(window.checks)} until {window.end:%H:%M:%S} UTC", "",
        "| service | image | tag | last-good now |", "|---|---|---|---|",
        *[f"| {r['service']} | `{r['image_id'][:19]}` | {r['tag']} | {'yes' if r['last_good'] else 'no'} |"
          for r in rows]])


@flow(name="deploy-post", on_failure=[notify_failure])
def post_deploy_flow(services: Services, config: str | None = None, state: str | None = None,
                     repository: str | None = None) -> dict:
    """The health gate; passed: last-good releases, window closed; failed: charhub.deploy.gate-failed.

    Args:
        services: Service container names (as in the monitor config's `container:`).
        config: The monitor YAML; default setting monitor_config.
        state: The monitor's state store (windows, incidents); default setting monitor_state.
        repository: Repository for backups and release records; default from settings.
    """
    settings, cfg, by_service, repo = _setup(services, config, repository)
    with resource_lock("service", *services):
        return _post(settings, cfg, by_service, repo, services, state)


def _post(settings, cfg, by_service: dict, repo, services: Services, state: str | None) -> dict:
    gate, outcome = _gate(settings, by_service)
    guards = [g for s in services if (g := releases_of(repo, settings).guard(s))]
    deploy_artifact("deploy-post", f"Post-deploy gate {outcome}", [
        f"- {gate.passes} passes in a row of {len(gate.checks)} check(s), {gate.rounds} round(s), {gate.seconds:.1f} s",
        *[f"- failing `{c}`: {d}" for c, d in gate.failing.items()]])
    if outcome != "passed":
        _gate_failed(settings, cfg, services, by_service, gate, guards)
    records = inspect_services(services)
    keys = save_records(repo, records, settings.backup.encrypt_to)
    mark_last_good(repo, records, keys, f"passed the post-deploy gate ({gate.passes} passes in a row)")
    close_windows(open_state(settings, state), [g.window_id for g in guards if g.window_id])
    return _post_summary(gate, outcome, by_service, records)


def _post_summary(gate: Gate, outcome: str, by_service: dict, records: list) -> dict:
    rows = [{"service": r.service, "image_id": r.image_id, "tag": r.tag,
             "healthy": _healthy(gate, by_service[r.service])} for r in records]
    return {"healthy": outcome == "passed", "gate_seconds": round(gate.seconds, 1), "rounds": gate.rounds,
            "failing": gate.failing, "services": rows}


def _gate_failed(settings, cfg, services: Services, by_service: dict, gate: Gate, guards: list[Guard]) -> None:
    """The event (the rollback deployment's trigger) and the notification first — a service whose container
    is gone is the worst case — then the run fails with the verdict."""
    detail = "; ".join(f"{c}: {d}" for c, d in gate.failing.items())
    emit(GATE_FAILED, f"charhub.deploy.{','.join(services)}",
         {"services": services, "detail": detail[:500], "release": guards[0].release if guards else None})
    notify(cfg.notify_block, f"charhub-ops: deploy gate FAILED for {', '.join(services)}",
           f"{detail}\nrollback: charhub-ops rollback --service {' --service '.join(services)}",
           settings.secret_values())
    summary = _post_summary(gate, "failed", by_service, inspect_services(services, missing_ok=True))
    raise VerificationError(f"deploy gate failed for {', '.join(services)} after {gate.seconds:.0f} s: {detail}",
                            details=summary)


def _rollback_plan(services: Services, records: dict, refs: dict, guards: dict, restore_data: bool) -> list[str]:
    lines = ["| service | to image | tag | volumes kept |", "|---|---|---|---|"]
    lines += [f"| {s} | `{records[s].image_id[:19]}` ({refs[s]}) | {records[s].tag} | "
              f"{', '.join(records[s].volumes()) or '—'} |" for s in services]
    if restore_data:
        g = guards[services[0]]
        lines += ["", f"**Data**: restore backup `{g.backup_id}` ({g.label}) of `{g.database}` over the live "
                      "database through restore's replace path (safety backup first; the live one is kept renamed)."]
    return lines


def _targets(repo, settings, services: Services, restore_data: bool):
    """Last-good records, image refs and guards; every refusal happens here, before anything changes."""
    releases = releases_of(repo, settings)
    missing = [s for s in services if releases.last_good(s) is None]
    if missing:
        raise ConfigError(f"rollback: no last-good release recorded for {', '.join(missing)} (run `charhub-ops "
                          "deploy pre` before deploying)")
    records = {s: releases.record(releases.last_good(s).record_key) for s in services}
    guards = {s: releases.guard(s) for s in services}
    backups = {(g.database, g.backup_id) for g in guards.values() if g and g.backup_id}
    if restore_data and (len(backups) != 1 or not all(guards.values())):
        raise ConfigError("rollback --restore-data: the services need one pre-deploy backup in common "
                          f"(found {len(backups)})")
    return records, check_images(list(records.values())), guards


@flow(name="rollback", on_failure=[notify_failure])
def rollback_flow(services: Services, restore_data: bool = False, reason: str = "manual rollback",
                  config: str | None = None, state: StateStore | None = None,
                  repository: Repository | None = None) -> dict:
    """Put each service back to its last-good release; returns services with from_image, to_image, healthy.

    Args:
        services: Service container names (as in the monitor config's `container:`).
        restore_data: Also restore the pre-deploy backup over the live database (approval in the UI first).
        reason: Why (kept in the incident report).
        config: The monitor YAML; default setting monitor_config.
        state: The monitor's state store (windows, incidents); default setting monitor_state.
        repository: Repository for backups and release records; default from settings.
    """
    settings, cfg, by_service, repo = _setup(services, config, repository)
    records, refs, guards = _targets(repo, settings, services, restore_data)
    plan = _rollback_plan(services, records, refs, guards, restore_data)
    deploy_artifact("rollback-plan", f"Rollback of {', '.join(services)}", plan)
    decision = None
    if restore_data and not settings.database.production:  # production: the restore flow asks, with its own plan
        decision = approve("\n".join(plan))
    run = _Rollback(settings=settings, cfg=cfg, state=state, services=services, records=records,
                    guards=guards, by_service=by_service, reason=reason, started=utcnow())
    with resource_lock("service", *services):
        current = {r.service: r for r in inspect_services(services, missing_ok=True)}
        todo = _still_to_roll_back(run, current)
        if not todo and not restore_data:
            return _already(run, current)
        done = _recreate_all(run, todo, refs, current)
        return _restore_and_gate(run, repo, done, restore_data, decision)


def _still_to_roll_back(run: _Rollback, current: dict) -> Services:
    """The services not yet on their last-good image with passing checks (one probe round)."""
    on_good = {s: run.by_service[s] for s in run.services
               if s in current and current[s].image_id == run.records[s].image_id}
    healthy = set()
    if on_good:
        gate, _ = _gate(run.settings, on_good, passes=1, timeout=0)
        healthy = {s for s, checks in on_good.items() if _healthy(gate, checks)}
    return [s for s in run.services if s not in healthy]


def _already(run: _Rollback, current: dict) -> dict:
    """Every service is already on last-good and healthy (another rollback got there first): nothing changes."""
    line = f"{', '.join(run.services)} already on last-good and healthy: nothing changed"
    get_run_logger().info("%s", line)
    deploy_artifact("rollback-report", f"Rollback of {', '.join(run.services)}: {line}", [f"- {line}"])
    rows = [{"service": s, "from_image": current[s].image_id, "to_image": current[s].image_id,
             "tag": run.records[s].tag, "replaced_container": None, "healthy": True} for s in run.services]
    return {"services": rows, "healthy": True, "already_on_last_good": True, "gate_seconds": 0.0,
            "seconds": round((utcnow() - run.started).total_seconds(), 1), "incident_id": None, "report": None,
            "restored_backup": None}


def _recreate_all(run: _Rollback, todo: Services, refs: dict, current: dict) -> list:
    """Recreate every service of ``todo``, all or none: a failure puts back those already recreated (the
    failing one has put itself back), documents the incident and raises."""
    done = []
    try:
        for s in todo:
            done.append(recreate_service(run.records[s], refs[s], current[s].container_id if s in current else None))
    except OpsError as exc:
        failed = todo[len(done)]
        run.actions = [ActionResult(action="rollback", ok=False, ran=True, at=utcnow(), detail=f"{failed}: {exc}")]
        lines = undo_recreates(done)
        run.actions += [ActionResult(action="put-back", ok="NOT" not in line, ran=True, at=utcnow(), detail=line)
                        for line in lines]
        _document(run, open_state(run.settings, run.state), todo, f"not run: the rollback stopped at {failed}; "
                  f"{len(done)} service(s) rolled back before it put back, {failed} put back by itself", False,
                  utcnow())
        raise
    run.actions = [ActionResult(action="rollback", ok=True, ran=True, at=utcnow(), detail=f"{d.service}: "
                   f"{(d.from_image or 'none')[:19]} → {d.to_image[:19]} ({run.records[d.service].tag})")
                   for d in done]
    return done


def _restore_and_gate(run: _Rollback, repo, done: list, restore_data: bool, decision=None) -> dict:
    restored = None
    if restore_data:
        g = run.guards[run.services[0]]
        source = RestoreSource(source_database=g.database, backup=g.backup_id)
        restored = restore_flow(repository=repo.url, source=source, target=RestoreTarget(replace=True))
        answer = decision or Decision.recorded(restored)  # outside production, or restore's own pause
        run.actions.append(ActionResult(action="restore-data", ok=True, ran=True, at=utcnow(),
                                        detail=f"backup {g.backup_id} swapped into {restored['database']}; "
                                               + (answer.line() if answer else "approved with --yes")))
    gate, outcome = _gate(run.settings, run.by_service)
    return _finish(run, done, gate, outcome, restored)


@dataclass
class _Rollback:
    """What the end of a rollback needs to report it."""

    settings: Settings
    cfg: MonitorConfig
    state: str | None
    services: Services
    records: dict
    guards: dict
    by_service: dict
    reason: str
    started: datetime
    actions: list[ActionResult] = field(default_factory=list)


def _finish(run: _Rollback, done: list, gate: Gate, outcome: str, restored: dict | None) -> dict:
    """Close the windows, emit per service, document the incident; the run fails when the gate did."""
    store, now = open_state(run.settings, run.state), utcnow()
    close_windows(store, [g.window_id for g in run.guards.values() if g and g.window_id])
    rows = [{"service": d.service, "from_image": d.from_image, "to_image": d.to_image,
             "tag": run.records[d.service].tag, "replaced_container": d.replaced,
             "healthy": _healthy(gate, run.by_service[d.service])} for d in done]
    for row in rows:
        emit(ROLLED_BACK, f"charhub.service.{row['service']}",
             {k: row[k] for k in ("service", "from_image", "to_image", "healthy")})
    gate_detail = (f"passed ({gate.passes} in a row, {gate.seconds:.1f} s)" if outcome == "passed" else
                   "; ".join(f"{c}: {d}" for c, d in gate.failing.items()))
    inc = _document(run, store, [d.replaced for d in done if d.replaced], gate_detail, outcome == "passed", now)
    summary = {"services": rows, "healthy": outcome == "passed", "already_on_last_good": False,
               "gate_seconds": round(gate.seconds, 1), "seconds": round((now - run.started).total_seconds(), 1),
               "incident_id": inc.id,
               "report": inc.report, "restored_backup": restored["backup_id"] if restored else None}
    if outcome != "passed":
        raise VerificationError(f"rollback of {', '.join(run.services)} done but the health gate failed: "
                                f"{gate_detail}", details=summary)
    return summary


def _document(run: _Rollback, store, log_of: list[str], gate_detail: str, healthy: bool, now: datetime):
    """The incident (kept in the monitor's store), its report with the logs of the containers ``log_of`` (the
    failed release), the message; every value of the recorded environments masked."""
    secrets = run.settings.secret_values()
    guard = next((g for g in run.guards.values() if g), None)
    inc = rollback_incident(run.services, run.reason, guard, run.actions, gate_detail, healthy, run.started, now,
                            run.cfg.owner)
    logs = replaced_logs(log_of, run.cfg.log_lines,
                         [*secrets, *(v for r in run.records.values() for v in env_values(r.env))])
    details = "\n\n".join(f"### Logs of the replaced container {n}\n\n```\n{t.strip()}\n```"
                           for n, t in logs.items())
    path = write_rollback_report(str(incident_report_path(run.cfg.incident_dir, inc)), inc, details)
    inc = inc.model_copy(update={"report": path})
    store.save_incident(inc)
    outcome = ("rolled back (healthy)" if healthy else "rollback FAILED: put back" if not all(a.ok for a in run.actions)
               else "rolled back (STILL FAILING)")
    notify(run.cfg.notify_block, f"charhub-ops: deployment of {', '.join(run.services)} {outcome}",
           "\n".join([*(a.detail for a in run.actions), f"health gate: {gate_detail}", f"report: {path}"]), secrets)
    return inc
