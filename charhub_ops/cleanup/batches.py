"""Pure batch policy: how big the next batch is and whether the run may take another one.

GitLab's batched background migrations grow a batch while batches stay fast and shrink it by a quarter after
a timeout; here a full batch that took under half of ``target_seconds`` grows by half (up to ``ceiling``), one
that took over twice the target shrinks by a quarter, and a lock/statement timeout shrinks it and lowers the
ceiling to the new size (a table that timed out once is busy: the size never grows back past it). The size never
falls under ``floor``. The pause after a batch is proportional to its duration (:func:`pause_after`), so the
cleaner takes a bounded share of the server however big the batches get. A run ends cleanly when ``max_rows``
or ``max_seconds`` is reached — the next run resumes from the kept cursor. No clock and no I/O: callers pass
the elapsed time.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BatchSizer", "Budget", "choose_sweep", "pause_after", "stop_reason"]


@dataclass
class BatchSizer:
    """The current batch size: :meth:`record` after each batch, :meth:`shrink` after a lock or statement timeout.
    ``ceiling`` None (or not above ``size``): the size never grows."""

    size: int
    floor: int = 100
    ceiling: int | None = None
    target_seconds: float = 0.1
    max_failures_at_floor: int = 5
    failures_at_floor: int = 0

    def __post_init__(self) -> None:
        self.floor = max(1, min(self.floor, self.size))
        self.ceiling = max(self.size, self.ceiling or self.size)

    def record(self, seconds: float, full: bool) -> None:
        """After a batch: grow by half if it was full and took under half the target, shrink by a quarter if it
        took over twice the target (a short batch says nothing about the size: the range ran out)."""
        if full and seconds < self.target_seconds / 2:
            self.size = min(self.ceiling, self.size + max(1, self.size // 2))
        elif seconds > self.target_seconds * 2:
            self._cut()

    def shrink(self) -> bool:
        """After a timeout: shrink by a quarter (not under the floor) and never grow back past the new size.
        False once the floor itself failed too often: give up."""
        if self.size <= self.floor:
            self.failures_at_floor += 1
            return self.failures_at_floor < self.max_failures_at_floor
        self._cut()
        self.ceiling = self.size
        return True

    def _cut(self) -> None:
        self.size = max(self.floor, self.size - max(1, self.size // 4))



def pause_after(seconds: float, minimum: float, ratio: float) -> float:
    """Seconds to sleep after a batch that took ``seconds``: ``ratio`` × its duration, at least ``minimum``
    (ratio 0.1: the cleaner works at most 91 % of the time, whatever the batch size)."""
    return max(minimum, seconds * ratio)


@dataclass(frozen=True)
class Budget:
    max_rows: int | None = None
    max_seconds: float | None = None


def stop_reason(budget: Budget, deleted: int, elapsed: float, finished: bool) -> str | None:
    """Why the run stops before the next batch, or None to go on.

    ``done``: the sweep is through (the index sweep: a batch found nothing — a short batch is not the end, SKIP
    LOCKED may have passed over rows a writer holds; the block sweep: it reached the table's end);
    ``max_rows`` / ``max_seconds``: the budget is spent (the next run resumes)."""
    if finished:
        return "done"
    if budget.max_rows is not None and deleted >= budget.max_rows:
        return "max_rows"
    if budget.max_seconds is not None and elapsed >= budget.max_seconds:
        return "max_seconds"
    return None


def choose_sweep(requested: str, *, partitioned: bool, indexed: bool, matched: int, estimated_rows: int,
                 share: float) -> str:
    """``index`` or ``blocks`` (see :mod:`.sweep`). A partitioned table always walks the index (block numbers are
    per partition); a table with no index leading with the timestamp always sweeps its blocks (one scan per run
    instead of one per batch); otherwise ``requested``, or when it is ``auto`` the blocks once the matched rows
    are at least ``share`` of the table (or the table was never analyzed), the index below that."""
    if partitioned:
        return "index"
    if not indexed:
        return "blocks"
    if requested != "auto":
        return requested
    return "blocks" if estimated_rows <= 0 or matched >= share * estimated_rows else "index"
