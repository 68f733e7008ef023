"""Which retention policy applies: the ``--keep-*`` options given, or the settings. Pure.

restic users expect ``--keep-last 1`` to mean "keep the newest backup", not "the newest backup plus the
settings' 7 daily, 4 weekly and 6 monthly". So, as with ``restic forget``:

* when ANY keep option (``keep_last`` … ``keep_within``) is given (not None), the options given ARE the
  policy: every rule left out is off;
* when none is given, the settings' policy applies (``CHARHUB_OPS_KEEP_*``; default 7 daily, 4 weekly,
  6 monthly).

``min_keep`` is not a rule but our own floor (restic has none): the option when given, else the setting,
in both cases. The CLI (``retention plan``, ``backups prune``) and the ``prune`` flow's parameters all go
through :func:`choose_policy`.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from charhub_ops.retention.policy import RetentionPolicy

__all__ = ["KEEP_FIELDS", "SETTINGS_FIELDS", "PolicyChoice", "choose_policy", "describe_policy"]

# The rules that have a setting (CHARHUB_OPS_KEEP_DAILY …), a CLI option and a flow parameter.
KEEP_FIELDS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
               "keep_within")
SETTINGS_FIELDS = (*KEEP_FIELDS, "min_keep")


class PolicyChoice(NamedTuple):
    """The policy that applies and where its rules came from (``min_keep`` aside)."""

    policy: RetentionPolicy
    source: Literal["options", "settings"]


def choose_policy(settings: Any, **options: Any) -> PolicyChoice:
    """The policy for ``options`` (CLI options or flow parameters; None = not given) over ``settings``
    (anything with the :data:`SETTINGS_FIELDS` attributes). Raises :class:`PolicyError` for a bad value
    or an unknown option, like :meth:`RetentionPolicy.build`."""
    given = {name: value for name, value in options.items() if value is not None}
    source: Literal["options", "settings"] = "options" if given.keys() - {"min_keep"} else "settings"
    values = {name: getattr(settings, name) for name in SETTINGS_FIELDS} if source == "settings" else {}
    values.setdefault("min_keep", settings.min_keep)
    return PolicyChoice(RetentionPolicy.build(**{**values, **given}), source)


def describe_policy(policy: RetentionPolicy) -> str:
    """One line for people: ``keep-last 1, keep-within 2w; min-keep 3`` (rules set, in option order)."""
    rules = [f"{name.replace('_', '-')} {value}" for name, value in policy
             if name != "min_keep" and value is not None]
    return f"{', '.join(rules) or 'no rule (keeps everything)'}; min-keep {policy.min_keep}"
