"""Pure batch policy: how big the next batch is and whether the run may take another one.

GitLab's batched background migrations shrink a batch by a quarter after a timeout; here the size never
falls under ``floor`` and never grows back within a run (a table that timed out once is busy). A run ends
cleanly when ``max_rows`` or ``max_seconds`` is reached — the next run resumes from the kept cursor.
No clock and no I/O: callers pass the elapsed time.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BatchSizer", "Budget", "stop_reason"]


@dataclass
class BatchSizer:
    """The current batch size; :meth:`shrink` after a lock or statement timeout."""

    size: int
    floor: int = 100
    max_failures_at_floor: int = 5
    failures_at_floor: int = 0

    def __post_init__(self) -> None:
        self.floor = max(1, min(self.floor, self.size))

    def shrink(self) -> bool:
        """Shrink by a quarter (not under the floor). False once the floor itself failed too often: give up."""
        if self.size <= self.floor:
            self.failures_at_floor += 1
            return self.failures_at_floor < self.max_failures_at_floor
        self.size = max(self.floor, self.size - max(1, self.size // 4))
        return True

    def next_size(self, deleted: int, max_rows: int | None) -> int:
        """The next batch's LIMIT: the current size, cut to what is left of ``max_rows``."""
        if max_rows is None:
            return self.size
        return max(0, min(self.size, max_rows - deleted))


@dataclass(frozen=True)
class Budget:
    max_rows: int | None = None
    max_seconds: float | None = None


def stop_reason(budget: Budget, deleted: int, elapsed: float, last_batch: int) -> str | None:
    """Why the run stops before the next batch, or None to go on.

    ``done``: the last batch found nothing (a short batch is not the end: SKIP LOCKED may have passed over
    rows a writer holds); ``max_rows`` / ``max_seconds``: the budget is spent (the next run resumes)."""
    if last_batch == 0:
        return "done"
    if budget.max_rows is not None and deleted >= budget.max_rows:
        return "max_rows"
    if budget.max_seconds is not None and elapsed >= budget.max_seconds:
        return "max_seconds"
    return None
