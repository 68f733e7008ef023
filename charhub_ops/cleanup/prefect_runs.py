"""Which flow runs of charhub-ops deployments have expired — pure: no Prefect import, no clock, no I/O.

The ``prefect`` part of the cleanup flow (tasks/cleanup_prefect.py) reads candidate runs from the Prefect API,
judges each one here with ``now`` passed in, and deletes in batches only what :func:`judge` calls expired, with a
predicate (:func:`delete_predicates`) that the server checks again at the moment of deleting.

A run is expired when **all** hold:

* it belongs to one of our deployments (the caller reads only those: named in prefect.yaml and tagged
  ``charhub-ops``);
* its state is terminal (Completed, Cancelled, Failed, Crashed) — Scheduled, Pending, Running, Paused, … never go;
* it is not the run doing the cleanup;
* it ended (``end_time``; the server sets it on entering a terminal state) before its cutoff: ``now - older_than``
  (default 30 days), or ``now - failed_older_than`` (default 90 days) for Failed and Crashed runs, which are kept
  longer for post-mortems. Prefect's own ``db_vacuum`` also ages flow runs by ``end_time``.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from charhub_ops.errors import ConfigError

__all__ = ["TERMINAL", "FAILED", "OTHER", "RunPolicy", "RunInfo", "Verdict", "judge", "judge_all", "counts",
           "delete_predicates", "Predicate"]

TERMINAL = ("COMPLETED", "CANCELLED", "FAILED", "CRASHED")
FAILED = ("FAILED", "CRASHED")
OTHER = tuple(t for t in TERMINAL if t not in FAILED)


class RunPolicy(BaseModel):
    """How long runs are kept. ``batch_size``: runs read (and deleted) per round."""

    model_config = ConfigDict(frozen=True)

    older_than: timedelta = timedelta(days=30)
    failed_older_than: timedelta = timedelta(days=90)
    batch_size: int = Field(200, ge=1, le=1000)

    @model_validator(mode="after")
    def _sane(self) -> RunPolicy:
        if self.older_than < timedelta(hours=1):
            raise ConfigError("--older-than-days (prefect_older_than_days): at least 1 hour (Prefect's own vacuum "
                              "has the same minimum)")
        if self.failed_older_than < self.older_than:
            raise ConfigError("--failed-older-than-days (prefect_failed_older_than_days): must not be shorter than "
                              "--older-than-days (failed runs are kept longer, never shorter)")
        return self

    @classmethod
    def from_days(cls, older_than_days: float, failed_older_than_days: float, batch_size: int) -> RunPolicy:
        """The CLI's and the flow's periods in days; a ConfigError naming the option otherwise."""
        try:
            return cls(older_than=timedelta(days=older_than_days),
                       failed_older_than=timedelta(days=failed_older_than_days), batch_size=batch_size)
        except ValidationError:  # the period checks raise ConfigError themselves
            raise ConfigError(f"--batch-size (prefect_batch_size): {batch_size}: between 1 and 1000") from None

    def cutoff(self, state_type: str, now: datetime) -> datetime:
        return now - (self.failed_older_than if state_type in FAILED else self.older_than)


class RunInfo(BaseModel):
    """What the policy needs of a flow run (the task builds it from Prefect's ``FlowRun``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    deployment_id: str
    deployment: str
    state_type: str | None
    state_name: str | None
    end_time: datetime | None


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    run: RunInfo
    expired: bool
    reason: str


def judge(run: RunInfo, policy: RunPolicy, now: datetime, current: str | None = None) -> Verdict:
    """Expired or kept, with the reason."""
    def kept(reason: str) -> Verdict:
        return Verdict(run=run, expired=False, reason=reason)

    if current is not None and run.id == current:
        return kept("the run doing the cleanup")
    if run.state_type not in TERMINAL:
        return kept(f"not finished ({run.state_name or run.state_type or 'no state'})")
    if run.end_time is None:
        return kept("no end time")
    cutoff = policy.cutoff(run.state_type, now)
    period = policy.failed_older_than if run.state_type in FAILED else policy.older_than
    if run.end_time >= cutoff:
        return kept(f"ended within {period.days} days")
    return Verdict(run=run, expired=True, reason=f"{run.state_name} and ended more than {period.days} days ago")


def judge_all(runs: list[RunInfo], policy: RunPolicy, now: datetime,
              current: str | None = None) -> tuple[list[RunInfo], list[Verdict]]:
    """(expired runs, verdicts of the kept ones)."""
    verdicts = [judge(r, policy, now, current) for r in runs]
    return [v.run for v in verdicts if v.expired], [v for v in verdicts if not v.expired]


def counts(runs: list[RunInfo]) -> list[dict]:
    """Runs per deployment and state: ``[{deployment, deployment_id, state, runs}]``, sorted."""
    tally = Counter((r.deployment, r.deployment_id, r.state_name or r.state_type or "?") for r in runs)
    return [{"deployment": d, "deployment_id": i, "state": s, "runs": n} for (d, i, s), n in sorted(tally.items())]


class Predicate(BaseModel):
    """What the server checks again when it deletes: these ids, of these deployments, in these terminal states,
    ended before ``ended_before``."""

    model_config = ConfigDict(frozen=True)

    ids: list[str]
    deployment_ids: list[str]
    state_types: list[str]
    ended_before: datetime


def delete_predicates(expired: list[RunInfo], policy: RunPolicy, now: datetime, chunk: int) -> list[Predicate]:
    """The expired runs as delete requests of at most ``chunk`` ids, one state class (failed or not) each, so the
    server repeats the whole test: a run retried or re-run since it was read no longer matches and stays."""
    out = []
    for types in (OTHER, FAILED):
        group = [r for r in expired if r.state_type in types]
        for start in range(0, len(group), chunk):
            part = group[start:start + chunk]
            out.append(Predicate(ids=[r.id for r in part], deployment_ids=sorted({r.deployment_id for r in part}),
                                 state_types=list(types), ended_before=policy.cutoff(types[0], now)))
    return out
