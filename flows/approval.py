"""The approval pause of destructive runs started from a deployment (restore over production, the swap,
rollback with restore_data outside production, migrate's restore on failure through restore).

:func:`approve` pauses the run with the plan as the form's description; the form has a tick box and a
**required** reason (the server refuses a resume without one). Every answer — approved or refused — is
recorded at once in the run's ``approval`` artifact with the reason and the UTC times the question was asked
and answered, and returned so the run's own report can show it. Who answered cannot be known: Prefect's open
source server has one shared credential (docs/deployments.md, "Access"). Refused, or 1 h without an answer: the run
fails and nothing was touched.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import pause_flow_run, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from pydantic import BaseModel, Field

from charhub_ops.errors import ConfigError
from tasks.common import setting

__all__ = ["Approval", "Decision", "approve"]


class Approval(RunInput):
    approve: bool = Field(False, description="Tick to approve the plan above; leave off to refuse")
    reason: str = Field(min_length=3, pattern=r"\S", description="Why (required; recorded with the time in the "
                                                                  "run's report)")


class Decision(BaseModel):
    """One answer to an approval pause (times in UTC)."""

    approved: bool
    reason: str
    asked_at: datetime
    answered_at: datetime

    @classmethod
    def recorded(cls, summary: dict) -> Decision | None:
        """The decision kept in a restore's result (``approval``), if it asked one."""
        return cls(**summary["approval"]) if summary.get("approval") else None

    def line(self) -> str:
        verdict = "Approved" if self.approved else "Refused"
        return (f"**{verdict}** at {self.answered_at:%Y-%m-%d %H:%M:%S} UTC (asked {self.asked_at:%H:%M:%S} UTC): "
                f"{' '.join(self.reason.split())}")


def approve(plan: str) -> Decision | None:
    """Production: a run from a deployment pauses until someone answers ``plan`` in the UI; the answer is
    recorded (artifact ``approval``) and returned. Refused: ConfigError. Outside a deployment run: None (the
    CLI's --yes has been required already)."""
    if runtime.deployment.id is None:
        return None
    asked = datetime.now(UTC)
    answer = pause_flow_run(wait_for_input=Approval.with_initial_data(description=plan), timeout=3600,
                            poll_interval=setting("approval_poll_seconds", 10))
    decision = Decision(approved=answer.approve, reason=answer.reason.strip(), asked_at=asked,
                        answered_at=datetime.now(UTC))
    create_markdown_artifact("\n".join(["# Approval", "", decision.line(), "", "## Plan", "", plan]),
                             key="approval", description="charhub-ops approval: answer, reason and time")
    if not decision.approved:
        raise ConfigError(f"restore not approved: {decision.reason}")
    return decision
