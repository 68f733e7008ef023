"""Table tests for the pure retention policy (restic 0.16+ ``forget`` semantics). No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from charhub_ops.errors import PolicyError
from charhub_ops.retention import policy as policy_module
from charhub_ops.retention.policy import (
    Candidate,
    Duration,
    RetentionPlan,
    RetentionPolicy,
    apply_policy,
    parse_duration,
    plan_from_records,
    plan_to_json,
)


def at(text: str) -> datetime:
    """``2026-03-01T23:59:59`` (naive = UTC) or with an offset."""
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def backups(*times: str, incomplete: tuple[str, ...] = ()) -> list[Candidate]:
    """Candidates whose id is their time text, so expectations read as times."""
    return [Candidate(id=t, time=at(t)) for t in times] + [
        Candidate(id=t, time=at(t), complete=False) for t in incomplete
    ]


def check_invariants(candidates: list[Candidate], plan: RetentionPlan) -> None:
    complete = [c.id for c in candidates if c.complete]
    kept = [k.id for k in plan.keep]
    removed = [c.id for c in plan.remove]
    assert sorted(kept + removed) == sorted(complete), "keep + remove must be exactly the complete backups"
    assert all(k.reasons for k in plan.keep), "every kept backup needs a reason"
    assert sorted(c.id for c in plan.ignored) == sorted(c.id for c in candidates if not c.complete)
    for group in ([k.time for k in plan.keep], [c.time for c in plan.remove], [c.time for c in plan.ignored]):
        assert group == sorted(group, reverse=True), "lists are newest first"


def run(candidates: list[Candidate], **policy: object) -> dict[str, list[str]]:
    """Apply the policy (min_keep=0 unless given), check invariants, return {kept id: reasons}."""
    policy.setdefault("min_keep", 0)
    plan = apply_policy(candidates, RetentionPolicy.build(**policy))
    check_invariants(candidates, plan)
    return {k.id: k.reasons for k in plan.keep}


# --- count rules: period boundaries, ISO weeks, the oldest backup --------------------------------

COUNT_CASES = [
    pytest.param(
        ["2026-03-02T00:00:00", "2026-03-01T23:59:59"],
        {"keep_daily": 5},
        {"2026-03-02T00:00:00": ["daily"], "2026-03-01T23:59:59": ["daily"]},
        id="daily-midnight-splits-days",
    ),
    pytest.param(
        ["2026-03-01T23:59:59", "2026-03-01T00:00:00"],
        {"keep_daily": 5},
        {"2026-03-01T23:59:59": ["daily"], "2026-03-01T00:00:00": ["oldest (daily)"]},
        id="daily-same-day-newest-wins",
    ),
    pytest.param(
        ["2026-03-01T11:00:00", "2026-03-01T10:59:59", "2026-03-01T10:00:00"],
        {"keep_hourly": 2},
        {"2026-03-01T11:00:00": ["hourly"], "2026-03-01T10:59:59": ["hourly"]},
        id="hourly-boundary",
    ),
    pytest.param(
        ["2026-02-01T00:00:00", "2026-01-31T23:59:59", "2026-01-01T00:00:00"],
        {"keep_monthly": 2},
        {"2026-02-01T00:00:00": ["monthly"], "2026-01-31T23:59:59": ["monthly"]},
        id="monthly-boundary",
    ),
    pytest.param(
        # 2026-12-31 (Thu) and 2027-01-01 (Fri) are both ISO 2026-W53; 2027-01-04 (Mon) is 2027-W01.
        ["2027-01-04T09:00:00", "2027-01-01T09:00:00", "2026-12-31T09:00:00"],
        {"keep_weekly": 2},
        {"2027-01-04T09:00:00": ["weekly"], "2027-01-01T09:00:00": ["weekly"]},
        id="iso-week-53-spans-new-year",
    ),
    pytest.param(
        ["2027-01-04T09:00:00", "2027-01-01T09:00:00", "2026-12-31T09:00:00"],
        {"keep_yearly": 5},
        {"2027-01-04T09:00:00": ["yearly"], "2026-12-31T09:00:00": ["yearly"]},
        id="yearly-is-calendar-not-iso",
    ),
    pytest.param(
        # 2020-12-28 (Mon) .. 2021-01-03 (Sun) is ISO 2020-W53.
        ["2021-01-04T00:00:00", "2021-01-03T23:59:59", "2020-12-31T12:00:00", "2020-12-27T12:00:00"],
        {"keep_weekly": 2},
        {"2021-01-04T00:00:00": ["weekly"], "2021-01-03T23:59:59": ["weekly"]},
        id="iso-2020-w53-count-used-up",
    ),
    pytest.param(
        ["2026-03-04T10:00:00", "2026-03-03T10:00:00", "2026-03-02T10:00:00", "2026-03-01T10:00:00"],
        {"keep_last": 2},
        {"2026-03-04T10:00:00": ["last"], "2026-03-03T10:00:00": ["last"]},
        id="last",
    ),
    pytest.param(
        ["2026-03-02T10:00:00", "2026-03-01T12:00:00", "2026-03-01T10:00:00"],
        {"keep_daily": -1},
        {
            "2026-03-02T10:00:00": ["daily"],
            "2026-03-01T12:00:00": ["daily"],
            "2026-03-01T10:00:00": ["oldest (daily)"],
        },
        id="unlimited-daily-keeps-oldest-too",
    ),
    pytest.param(
        ["2026-03-02T10:00:00", "2026-03-01T12:00:00", "2026-02-20T10:00:00"],
        {"keep_last": 1, "keep_daily": 2, "keep_monthly": 2},
        {
            "2026-03-02T10:00:00": ["last", "daily", "monthly"],
            "2026-03-01T12:00:00": ["daily"],
            "2026-02-20T10:00:00": ["monthly"],
        },
        id="overlapping-rules-list-every-reason",
    ),
    pytest.param(
        # 01:30+02:00 is 23:30 UTC the day before: the same UTC day as 10:00Z.
        ["2026-03-02T01:30:00+02:00", "2026-03-01T10:00:00+00:00"],
        {"keep_daily": 1},
        {"2026-03-02T01:30:00+02:00": ["daily"]},
        id="period-keys-use-utc",
    ),
]


@pytest.mark.parametrize(("times", "policy", "expected"), COUNT_CASES)
def test_count_rules(times: list[str], policy: dict, expected: dict[str, list[str]]) -> None:
    assert run(backups(*times), **policy) == expected


# --- the oldest backup: kept when a rule's count (or window) is not used up -----------------------

OLDEST_CASES = [
    pytest.param(
        ["2026-03-02T10:00:00", "2026-03-01T12:00:00", "2026-03-01T10:00:00"],
        {"keep_daily": 10},
        {
            "2026-03-02T10:00:00": ["daily"],
            "2026-03-01T12:00:00": ["daily"],
            "2026-03-01T10:00:00": ["oldest (daily)"],
        },
        id="count-left-keeps-oldest-of-a-kept-day",
    ),
    pytest.param(
        ["2026-03-03T10:00:00", "2026-03-02T10:00:00", "2026-03-01T10:00:00"],
        {"keep_daily": 10},
        {d: ["daily"] for d in ["2026-03-03T10:00:00", "2026-03-02T10:00:00", "2026-03-01T10:00:00"]},
        id="oldest-in-a-new-day-is-a-plain-daily",
    ),
    pytest.param(
        ["2026-03-02T10:00:00", "2026-03-01T12:00:00", "2026-03-01T10:00:00"],
        {"keep_daily": 2},
        {"2026-03-02T10:00:00": ["daily"], "2026-03-01T12:00:00": ["daily"]},
        id="count-used-up-exactly-before-oldest",
    ),
    pytest.param(
        ["2026-03-03T10:00:00", "2026-03-02T10:00:00", "2026-03-01T12:00:00", "2026-03-01T10:00:00"],
        {"keep_daily": 1},
        {"2026-03-03T10:00:00": ["daily"]},
        id="count-used-up-long-before-oldest",
    ),
    pytest.param(
        ["2026-03-02T10:00:00"],
        {"keep_daily": 3},
        {"2026-03-02T10:00:00": ["daily"]},
        id="single-backup-is-newest-not-oldest",
    ),
    pytest.param(
        ["2026-03-02T10:00:00", "2026-03-02T09:00:00", "2026-03-02T08:00:00"],
        {"keep_last": 5},
        {d: ["last"] for d in ["2026-03-02T10:00:00", "2026-03-02T09:00:00", "2026-03-02T08:00:00"]},
        id="last-never-says-oldest",
    ),
    pytest.param(
        ["2026-03-09T10:00:00", "2026-03-08T10:00:00", "2026-03-08T09:00:00"],
        {"keep_daily": 5, "keep_weekly": 1, "keep_monthly": 3},
        {
            "2026-03-09T10:00:00": ["daily", "weekly", "monthly"],
            "2026-03-08T10:00:00": ["daily"],
            "2026-03-08T09:00:00": ["oldest (daily)", "oldest (monthly)"],
        },
        id="only-rules-with-count-left-keep-oldest",
    ),
    pytest.param(
        ["2026-05-10T12:00:00", "2026-05-09T20:00:00", "2026-05-09T10:00:00"],
        {"keep_within_daily": "3d"},
        {
            "2026-05-10T12:00:00": ["daily within 3d"],
            "2026-05-09T20:00:00": ["daily within 3d"],
            "2026-05-09T10:00:00": ["oldest (daily within 3d)"],
        },
        id="window-containing-oldest-keeps-it",
    ),
    pytest.param(
        ["2026-05-10T12:00:00", "2026-05-09T20:00:00", "2026-05-01T10:00:00"],
        {"keep_within_daily": "3d"},
        {"2026-05-10T12:00:00": ["daily within 3d"], "2026-05-09T20:00:00": ["daily within 3d"]},
        id="oldest-outside-window-not-kept",
    ),
]


@pytest.mark.parametrize(("times", "policy", "expected"), OLDEST_CASES)
def test_oldest_rule(times: list[str], policy: dict, expected: dict[str, list[str]]) -> None:
    assert run(backups(*times), **policy) == expected


def test_oldest_rule_counts_only_complete_backups() -> None:
    # The oldest *complete* backup is the one kept; an older failed run neither counts nor is kept.
    candidates = backups(
        "2026-03-02T10:00:00", "2026-03-01T12:00:00", "2026-03-01T10:00:00",
        incomplete=("2026-02-20T10:00:00",),
    )
    assert run(candidates, keep_daily=5) == {
        "2026-03-02T10:00:00": ["daily"],
        "2026-03-01T12:00:00": ["daily"],
        "2026-03-01T10:00:00": ["oldest (daily)"],
    }


# --- within rules: calendar arithmetic, strict boundary ------------------------------------------

WITHIN_CASES = [
    pytest.param(
        # newest - 1m = "Feb 31" = Mar 3 12:00 (Go AddDate); restic keeps only times strictly after it.
        ["2026-03-31T12:00:00", "2026-03-03T12:00:01", "2026-03-03T12:00:00", "2026-02-28T12:00:00"],
        {"keep_within": "1m"},
        {"2026-03-31T12:00:00": ["within 1m"], "2026-03-03T12:00:01": ["within 1m"]},
        id="within-month-normalised",
    ),
    pytest.param(
        # 2028-02-29 - 1y = "2027-02-29" = 2027-03-01.
        ["2028-02-29T00:00:00", "2027-03-01T00:00:01", "2027-03-01T00:00:00", "2027-02-28T23:00:00"],
        {"keep_within": "1y"},
        {"2028-02-29T00:00:00": ["within 1y"], "2027-03-01T00:00:01": ["within 1y"]},
        id="within-year-from-leap-day",
    ),
    pytest.param(
        ["2026-03-10T12:00:00", "2026-02-24T12:00:01", "2026-02-24T12:00:00"],
        {"keep_within": "2w"},
        {"2026-03-10T12:00:00": ["within 2w"], "2026-02-24T12:00:01": ["within 2w"]},
        id="within-weeks",
    ),
    pytest.param(
        ["2026-03-10T12:00:00", "2026-03-09T00:00:01", "2026-03-09T00:00:00"],
        {"keep_within": "36h"},
        {"2026-03-10T12:00:00": ["within 36h"], "2026-03-09T00:00:01": ["within 36h"]},
        id="within-hours",
    ),
    pytest.param(
        [
            "2026-05-10T12:00:00",
            "2026-05-10T08:00:00",
            "2026-05-09T20:00:00",
            "2026-05-09T10:00:00",
            "2026-05-07T13:00:00",
            "2026-05-07T12:00:00",
            "2026-05-06T12:00:00",
        ],
        {"keep_within_daily": "3d"},
        {
            "2026-05-10T12:00:00": ["daily within 3d"],
            "2026-05-09T20:00:00": ["daily within 3d"],
            "2026-05-07T13:00:00": ["daily within 3d"],
        },
        id="within-daily-window",
    ),
    pytest.param(
        ["2026-05-31T00:00:00", "2026-05-01T00:00:00", "2026-04-30T23:00:00", "2025-11-30T00:00:00"],
        {"keep_within_monthly": "1m", "keep_yearly": 1},
        # May 31 - 1m = "Apr 31" = May 1 00:00 exactly, not strictly newer: only the newest is kept.
        {"2026-05-31T00:00:00": ["yearly", "monthly within 1m"]},
        id="within-monthly-boundary",
    ),
    pytest.param(
        ["2026-03-02T10:00:00", "2026-03-01T12:00:00", "2026-02-03T10:00:00"],
        {"keep_within": "1d", "keep_last": 1, "keep_within_weekly": "1m"},
        {
            "2026-03-02T10:00:00": ["within 1d", "last", "weekly within 1m"],
            "2026-03-01T12:00:00": ["within 1d", "weekly within 1m"],
            "2026-02-03T10:00:00": ["weekly within 1m"],
        },
        id="reasons-in-restic-order",
    ),
]


@pytest.mark.parametrize(("times", "policy", "expected"), WITHIN_CASES)
def test_within_rules(times: list[str], policy: dict, expected: dict[str, list[str]]) -> None:
    assert run(backups(*times), **policy) == expected


def test_within_reference_is_newest_complete_backup() -> None:
    candidates = backups("2026-03-01T00:00:00", "2026-02-27T00:00:00", incomplete=("2026-03-20T00:00:00",))
    assert run(candidates, keep_within="3d") == {
        "2026-03-01T00:00:00": ["within 3d"],
        "2026-02-27T00:00:00": ["within 3d"],
    }


# --- min_keep, incomplete backups, empty policy, safety -------------------------------------------

DAYS = [f"2026-03-{d:02d}T10:00:00" for d in range(5, 0, -1)]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param(
            {"keep_last": 1, "min_keep": 3},
            {DAYS[0]: ["last"], DAYS[1]: ["min_keep"], DAYS[2]: ["min_keep"]},
            id="tops-up-with-newest-removed",
        ),
        pytest.param(
            {"keep_last": 1, "min_keep": 10},
            {DAYS[0]: ["last"], **{d: ["min_keep"] for d in DAYS[1:]}},
            id="more-than-available-keeps-all",
        ),
        pytest.param({"keep_last": 4, "min_keep": 3}, {d: ["last"] for d in DAYS[:4]}, id="already-enough"),
        pytest.param(
            {"keep_last": 2},
            {DAYS[0]: ["last"], DAYS[1]: ["last"], DAYS[2]: ["min_keep"]},
            id="default-min-keep-is-3",
        ),
    ],
)
def test_min_keep(policy: dict, expected: dict[str, list[str]]) -> None:
    candidates = backups(*DAYS)
    plan = apply_policy(candidates, RetentionPolicy.build(**policy))
    check_invariants(candidates, plan)
    assert {k.id: k.reasons for k in plan.keep} == expected


def test_incomplete_backups_are_never_counted_nor_removed() -> None:
    candidates = backups(
        "2026-03-02T10:00:00",
        "2026-03-01T10:00:00",
        incomplete=("2026-03-03T10:00:00", "2026-02-01T10:00:00"),
    )
    plan = apply_policy(candidates, RetentionPolicy.build(keep_last=1, keep_daily=1, min_keep=0))
    check_invariants(candidates, plan)
    assert [(k.id, k.reasons) for k in plan.keep] == [("2026-03-02T10:00:00", ["last", "daily"])]
    assert [c.id for c in plan.remove] == ["2026-03-01T10:00:00"]
    assert [c.id for c in plan.ignored] == ["2026-03-03T10:00:00", "2026-02-01T10:00:00"]


def test_only_incomplete_backups_gives_an_empty_plan() -> None:
    candidates = backups(incomplete=("2026-03-03T10:00:00",))
    plan = apply_policy(candidates, RetentionPolicy.build(keep_last=1))
    assert (plan.keep, plan.remove, [c.id for c in plan.ignored]) == ([], [], ["2026-03-03T10:00:00"])
    assert apply_policy([], RetentionPolicy.build(keep_last=1)) == RetentionPlan([], [], [])


@pytest.mark.parametrize("policy", [{}, {"keep_daily": 0, "min_keep": 0}, {"keep_last": None}])
def test_empty_policy_keeps_everything(policy: dict) -> None:
    assert RetentionPolicy.build(**policy).is_empty()
    assert run(backups(*DAYS), **policy) == {d: ["policy empty"] for d in DAYS}


def test_policy_that_removes_everything_raises() -> None:
    # Not reachable through validation (every valid rule keeps the newest); restic 0.14 does this for
    # ``--keep-daily -1``, which it treats as "off" while the policy still counts as non-empty.
    policy = RetentionPolicy.model_construct(keep_daily=-2, min_keep=0)
    assert not policy.is_empty()
    with pytest.raises(PolicyError, match="would remove all 5 complete backups"):
        apply_policy(backups(*DAYS), policy)
    # min_keep is the safety net for the same policy.
    plan = apply_policy(backups(*DAYS), RetentionPolicy.model_construct(keep_daily=-2, min_keep=1))
    assert [(k.id, k.reasons) for k in plan.keep] == [(DAYS[0], ["min_keep"])]


def test_equal_times_are_ordered_by_id() -> None:
    t = at("2026-03-01T10:00:00")
    candidates = [Candidate("b", t), Candidate("a", t), Candidate("c", t - timedelta(hours=1))]
    plan = apply_policy(candidates, RetentionPolicy.build(keep_last=1, min_keep=0))
    check_invariants(candidates, plan)
    assert [k.id for k in plan.keep] == ["a"]
    assert [c.id for c in plan.remove] == ["b", "c"]


def test_kept_times_are_utc() -> None:
    tz = timezone(timedelta(hours=5))
    plan = apply_policy(
        [Candidate("x", datetime(2026, 3, 1, 4, 0, tzinfo=tz))], RetentionPolicy.build(keep_last=1)
    )
    assert plan.keep[0].time == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)
    assert plan.keep[0].time.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([Candidate("x", datetime(2026, 3, 1))], "backup x: time 2026-03-01T00:00:00 has no timezone"),
        ([Candidate("x", at("2026-03-01")), Candidate("x", at("2026-03-02"))], "backup x: id appears twice"),
    ],
)
def test_bad_candidates(candidates: list[Candidate], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        apply_policy(candidates, RetentionPolicy.build(keep_last=1))


# --- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("7d", Duration(days=7), "7d"),
        ("2w", Duration(weeks=2), "2w"),
        ("1y6m", Duration(years=1, months=6), "1y6m"),
        ("36h", Duration(hours=36), "36h"),
        ("1y2m3d4h", Duration(years=1, months=2, days=3, hours=4), "1y2m3d4h"),
        ("4h3d", Duration(days=3, hours=4), "3d4h"),
        ("1w3d", Duration(weeks=1, days=3), "1w3d"),
        (" 07d ", Duration(days=7), "7d"),
        ("0y1d", Duration(days=1), "1d"),
    ],
)
def test_parse_duration(text: str, expected: Duration, canonical: str) -> None:
    assert parse_duration(text) == expected
    assert str(parse_duration(text)) == canonical


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("7x", "cannot parse duration '7x' (use e.g. 7d, 2w, 1y6m, 36h)"),
        ("", "cannot parse duration ''"),
        ("7", "cannot parse duration '7'"),
        ("d", "cannot parse duration 'd'"),
        ("-1d", "cannot parse duration '-1d'"),
        ("1.5d", "cannot parse duration '1.5d'"),
        ("7 d", "cannot parse duration '7 d'"),
        ("7D", "cannot parse duration '7D'"),
        ("1d2d", "unit 'd' given twice"),
        ("0d", "duration '0d' is zero"),
        (7, "cannot parse duration 7"),
    ],
)
def test_parse_duration_errors(text: str, detail: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_duration(text, option="keep_within")
    assert str(info.value).startswith("keep_within: ")
    assert detail in str(info.value)


def test_parse_duration_error_default_option_name() -> None:
    with pytest.raises(PolicyError, match=r"^duration: cannot parse duration '7x'"):
        parse_duration("7x")


@pytest.mark.parametrize(
    ("newest", "duration", "cutoff"),
    [
        ("2026-03-31T12:00:00", "1m", "2026-03-03T12:00:00"),
        ("2026-03-31T12:00:00", "1m1d", "2026-03-02T12:00:00"),
        ("2026-05-31T00:00:00", "1m", "2026-05-01T00:00:00"),
        ("2024-02-29T00:00:00", "1y", "2023-03-01T00:00:00"),
        ("2026-01-15T06:00:00", "1y2m", "2024-11-15T06:00:00"),
        ("2026-01-01T00:00:00", "1h", "2025-12-31T23:00:00"),
        ("2026-03-10T00:00:00", "2w", "2026-02-24T00:00:00"),
        ("2026-03-01T00:00:00", "1d25h", "2026-02-26T23:00:00"),
        ("2026-03-01T00:00:00", "1y14m", "2024-01-01T00:00:00"),
    ],
)
def test_duration_before_matches_go_adddate(newest: str, duration: str, cutoff: str) -> None:
    assert parse_duration(duration).before(at(newest)) == at(cutoff)


def test_duration_before_year_one_is_unbounded() -> None:
    assert parse_duration("3000y").before(at("2026-01-01T00:00:00")) == datetime.min.replace(tzinfo=UTC)


# --- policy validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"keep_daily": -2}, ["keep_daily: must be -1 (unlimited), 0 (off) or a positive count, got -2"]),
        ({"keep_within": "7x"}, ["keep_within: cannot parse duration '7x' (use e.g. 7d, 2w, 1y6m, 36h)"]),
        ({"keep_within_daily": "0d"}, ["keep_within_daily: duration '0d' is zero"]),
        ({"min_keep": -1}, ["min_keep: "]),
        ({"keep_dayly": 3}, ["keep_dayly: unknown option"]),
        ({"keep_last": "3"}, ["keep_last: "]),
        ({"keep_hourly": True}, ["keep_hourly: "]),
        ({"keep_weekly": -5, "keep_within_yearly": "1q"}, ["keep_weekly: ", "keep_within_yearly: "]),
    ],
)
def test_validation_errors_name_the_field(kwargs: dict, fragments: list[str]) -> None:
    with pytest.raises(PolicyError) as info:
        RetentionPolicy.build(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_policy_accepts_unlimited_and_round_trips() -> None:
    policy = RetentionPolicy.build(keep_daily=-1, keep_within="2w", keep_within_monthly="1y6m", min_keep=0)
    assert policy.keep_within == Duration(weeks=2)
    dumped = policy.model_dump()
    assert dumped["keep_within"] == "2w"
    assert dumped["keep_within_monthly"] == "1y6m"
    assert RetentionPolicy.model_validate(dumped) == policy
    assert RetentionPolicy.build(keep_within=Duration(days=1)).keep_within == Duration(days=1)


@pytest.mark.parametrize(
    ("kwargs", "empty"),
    [
        ({}, True),
        ({"min_keep": 9}, True),
        ({"keep_last": 0}, True),
        ({"keep_yearly": -1}, False),
        ({"keep_within_hourly": "1h"}, False),
    ],
)
def test_is_empty(kwargs: dict, empty: bool) -> None:
    assert RetentionPolicy.build(**kwargs).is_empty() is empty


# --- records in, JSON out -------------------------------------------------------------------------


def test_plan_from_records_and_json() -> None:
    records = [
        {"id": "a", "time": "2026-03-01T10:00:00Z"},
        {"id": "b", "time": "2026-03-02T01:00:00+02:00"},  # 2026-03-01T23:00Z: same UTC day as a
        {"id": "c", "time": "2026-03-02T09:00:00"},  # naive = UTC
        {"id": "d", "time": "2026-03-03T09:00:00Z", "complete": False},
    ]
    plan = plan_from_records(records, RetentionPolicy.build(keep_daily=2, min_keep=0))
    assert [k.time for k in plan.keep] == [at("2026-03-02T09:00:00"), at("2026-03-01T23:00:00")]
    assert [c.id for c in plan.ignored] == ["d"]
    assert plan_to_json(plan) == {
        "keep": [{"id": "c", "reasons": ["daily"]}, {"id": "b", "reasons": ["daily"]}],
        "remove": ["a"],
    }


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ({"id": "a"}, "records: expected a list of objects, got dict"),
        (["a"], "records[0]: expected an object with 'id' and 'time', got str"),
        ([{"time": "2026-03-01T10:00:00Z"}], "records[0]: 'id' must be a non-empty string, got None"),
        ([{"id": "", "time": "2026-03-01T10:00:00Z"}], "records[0]: 'id' must be a non-empty string"),
        ([{"id": 5, "time": "2026-03-01T10:00:00Z"}], "records[0]: 'id' must be a non-empty string, got 5"),
        (
            [{"id": "a", "time": "2026-03-01T10:00:00Z"}, {"id": "b"}],
            "records[1] (b): 'time' must be an ISO-8601",
        ),
        (
            [{"id": "a", "time": 1700000000}],
            "records[0] (a): 'time' must be an ISO-8601 string, got 1700000000",
        ),
        ([{"id": "a", "time": "yesterday"}], "records[0] (a): cannot parse time 'yesterday' as ISO-8601"),
        (
            [{"id": "a", "time": "2026-03-01", "complete": "no"}],
            "records[0] (a): 'complete' must be true or false",
        ),
        (
            [{"id": "a", "time": "2026-03-01T10:00Z"}, {"id": "a", "time": "2026-03-02T10:00Z"}],
            "backup a: id appears twice",
        ),
    ],
)
def test_plan_from_records_bad_input(records: object, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        plan_from_records(records, RetentionPolicy.build(keep_last=1))  # type: ignore[arg-type]
    assert message in str(info.value)


def test_public_api() -> None:
    assert policy_module.__all__ == [
        "Candidate",
        "Duration",
        "Kept",
        "RetentionPlan",
        "RetentionPolicy",
        "apply_policy",
        "parse_duration",
        "plan_from_records",
        "plan_to_json",
    ]
