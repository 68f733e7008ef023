"""The logical policy's keep_weekly/keep_daily mapped onto pgBackRest's retention (pure, table-tested)."""

from __future__ import annotations

import pytest

from charhub_ops.errors import PolicyError
from charhub_ops.pitr.retention import MAX_COUNT, map_retention


@pytest.mark.parametrize(("weekly", "daily", "full", "diff", "phrases"), [
    (4, 7, 4, 7, ["4 newest full backups", "4 weeks", "7 newest differential backups", "7 days"]),
    (1, 1, 1, 1, ["1 newest full backup ", "1 week)", "1 newest differential backup ", "1 day)"]),
    (12, 30, 12, 30, ["12 weeks", "30 days"]),
    (MAX_COUNT, MAX_COUNT, MAX_COUNT, MAX_COUNT, [f"repo1-retention-full={MAX_COUNT}"]),
])
def test_mapping(weekly, daily, full, diff, phrases):
    m = map_retention(weekly, daily)
    assert (m.full, m.diff) == (full, diff)
    assert m.options() == {"repo1-retention-full-type": "count", "repo1-retention-full": str(full),
                           "repo1-retention-diff": str(diff)}
    text = "\n".join(m.explanation)
    assert len(m.explanation) == 3  # full, diff, WAL: one line each
    assert f"keep_weekly={weekly} → repo1-retention-full={full}" in text
    assert f"keep_daily={daily} → repo1-retention-diff={diff}" in text
    assert "WAL is kept back to the oldest full backup kept" in text
    for phrase in phrases:
        assert phrase in text


@pytest.mark.parametrize(("weekly", "daily", "setting"), [
    (0, 7, "pitr_keep_weekly"), (4, 0, "pitr_keep_daily"), (-1, 7, "pitr_keep_weekly"),
    (MAX_COUNT + 1, 7, "pitr_keep_weekly"), (4, True, "pitr_keep_daily"), (4, "7", "pitr_keep_daily"),
])
def test_a_count_pgbackrest_cannot_keep_is_refused_naming_the_setting(weekly, daily, setting):
    with pytest.raises(PolicyError, match=f"^{setting}: "):
        map_retention(weekly, daily)
