"""The logical policy's vocabulary (restic's ``keep_weekly``/``keep_daily``) mapped onto pgBackRest's retention.

Pure: no clock, no I/O. ``map_retention(keep_weekly, keep_daily) -> RetentionMapping`` with the two
``repo1-retention-*`` options and a printable explanation (``pitr expire`` and the flows print it).

The schedule is one full backup a week and one differential a day, so:

* ``keep_weekly`` N → ``repo1-retention-full=N`` (count): the N newest full backups stay, each with its
  differentials and incrementals; an extra (manual) full takes one of the N places, as restic's
  ``--keep-last`` would, not a week of its own;
* ``keep_daily`` M → ``repo1-retention-diff=M``: the M newest differentials stay (a differential also goes
  when its full goes, whatever M says);
* WAL is kept back to the oldest full kept (``repo1-retention-archive`` unset): any point in time from that
  full's end to the newest archived segment can be restored, about N weeks.

Raises ``PolicyError`` for a count below 1: pgBackRest cannot keep nothing, and an empty policy must never
delete everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from charhub_ops.errors import PolicyError

__all__ = ["RetentionMapping", "map_retention", "MAX_COUNT"]

MAX_COUNT = 9999999  # pgBackRest's upper bound for both options


@dataclass(frozen=True)
class RetentionMapping:
    full: int
    diff: int
    explanation: tuple[str, ...]

    def options(self) -> dict[str, str]:
        """The pgbackrest.conf options (``repo1-retention-full-type`` is pinned to count)."""
        return {"repo1-retention-full-type": "count", "repo1-retention-full": str(self.full),
                "repo1-retention-diff": str(self.diff)}


def _count(value: int, setting: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_COUNT:
        raise PolicyError(f"{setting}: {value!r} is not a count from 1 to {MAX_COUNT} (pgBackRest keeps at least "
                          f"one backup)")
    return value


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def map_retention(keep_weekly: int, keep_daily: int) -> RetentionMapping:
    """``keep_weekly``/``keep_daily`` (settings ``pitr_keep_weekly``/``pitr_keep_daily``) → pgBackRest's options."""
    full = _count(keep_weekly, "pitr_keep_weekly")
    diff = _count(keep_daily, "pitr_keep_daily")
    lines = (
        f"keep_weekly={full} → repo1-retention-full={full}: the {_plural(full, 'newest full backup')} "
        f"(one a week: {_plural(full, 'week')}), each with its differential and incremental backups",
        f"keep_daily={diff} → repo1-retention-diff={diff}: the {_plural(diff, 'newest differential backup')} "
        f"(one a day: {_plural(diff, 'day')}); a differential also expires with its full backup",
        f"WAL is kept back to the oldest full backup kept: point-in-time recovery reaches about "
        f"{_plural(full, 'week')} back",
    )
    return RetentionMapping(full=full, diff=diff, explanation=lines)
