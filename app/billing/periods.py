"""Billing periods: boundaries computed from the billing anchor, never drifting.

A boundary is ``anchor + n * count`` intervals. Month and year steps keep the
anchor's day of month, clamped to the last day of the target month, and the
anchor's time of day. Every boundary is computed from the anchor itself, so a
monthly plan anchored on Jan 31 renews on Feb 28/29, Mar 31, Apr 30, ...

All datetimes must be timezone-aware; they are compared and returned in UTC.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, get_args

Interval = Literal["day", "week", "month", "year"]

INTERVALS: Final[tuple[str, ...]] = get_args(Interval)
TRIAL_WILL_END_NOTICE: Final[timedelta] = timedelta(days=3)
MAX_TRIAL_DAYS: Final[int] = 730

_DAYS_PER_STEP: Final[dict[str, int]] = {"day": 1, "week": 7}
_MONTHS_PER_STEP: Final[dict[str, int]] = {"month": 1, "year": 12}


def to_utc(value: datetime, name: str = "datetime") -> datetime:
    """Return `value` in UTC; raise ValueError on naive datetimes, which are ambiguous."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
    return value.astimezone(UTC)


def _check_step(interval: str, count: int) -> None:
    """Reject unknown intervals and non-positive counts before doing calendar math."""
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"interval count must be a positive int, got {count!r}")


def _add_months(anchor: datetime, months: int) -> datetime:
    """Anchor moved by `months` months, day clamped to the target month's length."""
    index = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise ValueError("period boundary is out of the supported date range")
    day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
    return anchor.replace(year=year, month=month + 1, day=day)


def add_intervals(anchor: datetime, interval: Interval, count: int, n: int) -> datetime:
    """The n-th boundary (n >= 0): anchor + n*count intervals, from the anchor, day clamped."""
    anchor = to_utc(anchor, "anchor")
    _check_step(interval, count)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if interval in _MONTHS_PER_STEP:
        return _add_months(anchor, _MONTHS_PER_STEP[interval] * count * n)
    try:
        return anchor + timedelta(days=_DAYS_PER_STEP[interval] * count * n)
    except OverflowError as exc:
        raise ValueError("period boundary is out of the supported date range") from exc


def _estimate_index(anchor: datetime, interval: Interval, count: int, at: datetime) -> int:
    """A period index at most one away from the one containing `at` (at >= anchor)."""
    if interval in _DAYS_PER_STEP:
        return (at - anchor) // timedelta(days=_DAYS_PER_STEP[interval] * count)
    months = (at.year - anchor.year) * 12 + at.month - anchor.month
    return months // (_MONTHS_PER_STEP[interval] * count)


def period_containing(
    anchor: datetime, interval: Interval, count: int, at: datetime
) -> tuple[datetime, datetime]:
    """(start, end) of the period that contains `at` (start <= at < end); at >= anchor required."""
    anchor, at = to_utc(anchor, "anchor"), to_utc(at, "at")
    _check_step(interval, count)
    if at < anchor:
        raise ValueError(f"at ({at.isoformat()}) is before the anchor ({anchor.isoformat()})")
    n = _estimate_index(anchor, interval, count, at)
    while n > 0 and add_intervals(anchor, interval, count, n) > at:
        n -= 1
    while add_intervals(anchor, interval, count, n + 1) <= at:
        n += 1
    return add_intervals(anchor, interval, count, n), add_intervals(anchor, interval, count, n + 1)


def next_boundary(anchor: datetime, interval: Interval, count: int, after: datetime) -> datetime:
    """The first boundary strictly after `after`."""
    anchor, after = to_utc(anchor, "anchor"), to_utc(after, "after")
    _check_step(interval, count)
    if after < anchor:
        return anchor
    return period_containing(anchor, interval, count, after)[1]


def trial_end(start: datetime, trial_days: int) -> datetime | None:
    """When a trial of `trial_days` days started at `start` ends; None when there is no trial."""
    start = to_utc(start, "start")
    if isinstance(trial_days, bool) or not isinstance(trial_days, int):
        raise ValueError(f"trial_days must be an int, got {trial_days!r}")
    if not 0 <= trial_days <= MAX_TRIAL_DAYS:
        raise ValueError(f"trial_days must be in 0..{MAX_TRIAL_DAYS}, got {trial_days}")
    return start + timedelta(days=trial_days) if trial_days else None


def trial_will_end_at(start: datetime, trial_days: int) -> datetime | None:
    """When trial_will_end fires: notice before trial end, but never before the trial starts."""
    end = trial_end(start, trial_days)
    if end is None:
        return None
    return max(to_utc(start, "start"), end - TRIAL_WILL_END_NOTICE)
