"""Table tests for :func:`choose_policy`: the keep options given are the whole policy, else the settings."""

from __future__ import annotations

import pytest

from charhub_ops.errors import PolicyError
from charhub_ops.retention import options as options_module
from charhub_ops.retention.options import choose_policy, describe_policy
from charhub_ops.retention.policy import RetentionPolicy


class FakeSettings:
    """The settings' defaults (charhub_ops.settings): 7 daily, 4 weekly, 6 monthly, min_keep 3."""

    keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly = None, None, 7, 4, 6, None
    keep_within, min_keep = None, 3


SETTINGS_POLICY = {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6, "min_keep": 3}


@pytest.mark.parametrize(
    ("options", "source", "expected"),
    [
        pytest.param({}, "settings", SETTINGS_POLICY, id="nothing-given"),
        pytest.param(dict.fromkeys(options_module.SETTINGS_FIELDS), "settings", SETTINGS_POLICY,
                     id="all-none-is-nothing-given"),
        pytest.param({"min_keep": 0}, "settings", {**SETTINGS_POLICY, "min_keep": 0},
                     id="min-keep-alone-keeps-the-settings-rules"),
        pytest.param({"keep_last": 1}, "options", {"keep_last": 1, "min_keep": 3}, id="keep-last-alone"),
        pytest.param({"keep_last": 1, "keep_daily": None}, "options", {"keep_last": 1, "min_keep": 3},
                     id="none-is-not-given"),
        pytest.param({"keep_daily": 2, "min_keep": 0}, "options", {"keep_daily": 2, "min_keep": 0},
                     id="daily-replaces-daily-weekly-monthly"),
        pytest.param({"keep_within": "2w"}, "options", {"keep_within": "2w", "min_keep": 3}, id="within-alone"),
        pytest.param({"keep_yearly": -1}, "options", {"keep_yearly": -1, "min_keep": 3}, id="unlimited"),
        pytest.param({"keep_daily": 0}, "options", {"keep_daily": 0, "min_keep": 3},
                     id="zero-is-given-and-keeps-everything"),
    ],
)
def test_choose_policy(options: dict, source: str, expected: dict) -> None:
    choice = choose_policy(FakeSettings(), **options)
    assert choice.source == source
    assert choice.policy.model_dump(mode="json", exclude_none=True) == expected


def test_settings_from_the_environment_apply_whole(monkeypatch) -> None:
    from charhub_ops.settings import load_settings

    monkeypatch.setenv("CHARHUB_OPS_KEEP_LAST", "2")
    monkeypatch.setenv("CHARHUB_OPS_KEEP_MONTHLY", "0")
    assert load_settings().retention.policy().policy == RetentionPolicy.build(
        keep_last=2, keep_daily=7, keep_weekly=4, keep_monthly=0, min_keep=3)
    assert load_settings().retention.policy(keep_hourly=5).policy == RetentionPolicy.build(keep_hourly=5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keep_daily": -2}, "retention policy: keep_daily: must be -1 (unlimited)"),
        ({"keep_within": "soon"}, "retention policy: keep_within: cannot parse duration 'soon'"),
        ({"keep_dayly": 2}, "keep_dayly: unknown option"),
        ({"min_keep": -1}, "retention policy: min_keep: "),
    ],
)
def test_choose_policy_errors(options: dict, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        choose_policy(FakeSettings(), **options)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({}, "keep-daily 7, keep-weekly 4, keep-monthly 6; min-keep 3"),
        ({"keep_last": 1, "keep_within": "1y6m", "min_keep": 0}, "keep-last 1, keep-within 1y6m; min-keep 0"),
        ({"keep_daily": 0}, "keep-daily 0; min-keep 3"),
    ],
)
def test_describe_policy(options: dict, text: str) -> None:
    assert describe_policy(choose_policy(FakeSettings(), **options).policy) == text


def test_describe_empty_policy() -> None:
    assert describe_policy(RetentionPolicy.build(min_keep=1)) == "no rule (keeps everything); min-keep 1"


def test_public_api() -> None:
    assert options_module.__all__ == ["KEEP_FIELDS", "SETTINGS_FIELDS", "PolicyChoice", "choose_policy",
                                         "describe_policy"]
