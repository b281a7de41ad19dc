"""Properties and examples for billing periods anchored on the billing anchor."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.billing.periods import (
    TRIAL_WILL_END_NOTICE,
    Interval,
    add_intervals,
    next_boundary,
    period_containing,
    trial_end,
    trial_will_end_at,
)

anchors = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)
)
intervals: st.SearchStrategy[Interval] = st.sampled_from(get_args(Interval))
counts = st.integers(min_value=1, max_value=12)
ns = st.integers(min_value=0, max_value=120)
offsets = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=365 * 30))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """Build a UTC datetime tersely."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def months_between(a: datetime, b: datetime) -> int:
    """Calendar months from a's month to b's month."""
    return (b.year - a.year) * 12 + b.month - a.month


def boundary_index(anchor: datetime, interval: Interval, count: int, b: datetime) -> int:
    """Index k of boundary b, derived independently of the code under test."""
    if interval in ("day", "week"):
        return (b - anchor) // timedelta(days=count * (7 if interval == "week" else 1))
    return months_between(anchor, b) // (count * (12 if interval == "year" else 1))


@given(anchors, intervals, counts, ns)
def test_boundaries_strictly_increase(
    anchor: datetime, interval: Interval, count: int, n: int
) -> None:
    assert add_intervals(anchor, interval, count, n) < add_intervals(anchor, interval, count, n + 1)


@given(anchors, intervals, counts)
def test_zeroth_boundary_is_the_anchor(anchor: datetime, interval: Interval, count: int) -> None:
    assert add_intervals(anchor, interval, count, 0) == anchor


@given(anchors, st.sampled_from(["month", "year"]), counts, ns)
def test_day_is_anchor_day_clamped_and_time_kept(
    anchor: datetime, interval: Interval, count: int, n: int
) -> None:
    b = add_intervals(anchor, interval, count, n)
    assert b.day == min(anchor.day, calendar.monthrange(b.year, b.month)[1])
    assert b.timetz() == anchor.timetz()
    step = count * (12 if interval == "year" else 1)
    assert months_between(anchor, b) == step * n


@given(anchors, intervals, counts, st.integers(min_value=1, max_value=120))
def test_n_periods_equal_one_period_of_n_times_the_count(
    anchor: datetime, interval: Interval, count: int, n: int
) -> None:
    assert add_intervals(anchor, interval, count, n) == add_intervals(
        anchor, interval, count * n, 1
    )


@given(anchors, st.sampled_from(["day", "week"]), counts, ns)
def test_days_and_weeks_are_exact_timedeltas(
    anchor: datetime, interval: Interval, count: int, n: int
) -> None:
    days = count * n * (7 if interval == "week" else 1)
    assert add_intervals(anchor, interval, count, n) == anchor + timedelta(days=days)


@given(anchors, intervals, counts, offsets)
def test_period_containing_holds_at_between_consecutive_boundaries(
    anchor: datetime, interval: Interval, count: int, offset: timedelta
) -> None:
    at = anchor + offset
    start, end = period_containing(anchor, interval, count, at)
    assert start <= at < end
    k = boundary_index(anchor, interval, count, start)
    assert add_intervals(anchor, interval, count, k) == start
    assert end == add_intervals(anchor, interval, count, k + 1)


@given(anchors, intervals, counts, ns)
def test_period_containing_a_boundary_starts_there(
    anchor: datetime, interval: Interval, count: int, n: int
) -> None:
    b = add_intervals(anchor, interval, count, n)
    assert period_containing(anchor, interval, count, b) == (
        b,
        add_intervals(anchor, interval, count, n + 1),
    )
    assert next_boundary(anchor, interval, count, b) == add_intervals(
        anchor, interval, count, n + 1
    )


@given(anchors, intervals, counts, offsets)
def test_next_boundary_is_first_strictly_after(
    anchor: datetime, interval: Interval, count: int, offset: timedelta
) -> None:
    after = anchor + offset
    nb = next_boundary(anchor, interval, count, after)
    assert nb > after
    assert period_containing(anchor, interval, count, after)[1] == nb


@given(
    anchors,
    intervals,
    counts,
    st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=9999)),
)
def test_next_boundary_before_anchor_is_anchor(
    anchor: datetime, interval: Interval, count: int, before: timedelta
) -> None:
    assert next_boundary(anchor, interval, count, anchor - before) == anchor


def test_jan_31_monthly_never_drifts() -> None:
    anchor = utc(2024, 1, 31, 9, 30)
    got = [add_intervals(anchor, "month", 1, n).date().isoformat() for n in range(1, 14)]
    assert got == [
        "2024-02-29", "2024-03-31", "2024-04-30", "2024-05-31", "2024-06-30", "2024-07-31",
        "2024-08-31", "2024-09-30", "2024-10-31", "2024-11-30", "2024-12-31", "2025-01-31",
        "2025-02-28",
    ]  # fmt: skip
    assert add_intervals(anchor, "month", 1, 2) == utc(2024, 3, 31, 9, 30)


def test_jan_31_quarterly_and_non_leap_feb() -> None:
    anchor = utc(2023, 1, 31)
    assert add_intervals(anchor, "month", 1, 1) == utc(2023, 2, 28)
    assert add_intervals(anchor, "month", 3, 1) == utc(2023, 4, 30)
    assert add_intervals(anchor, "month", 3, 2) == utc(2023, 7, 31)


def test_yearly_on_feb_29() -> None:
    anchor = utc(2024, 2, 29, 12)
    got = [add_intervals(anchor, "year", 1, n) for n in range(1, 5)]
    assert got == [
        utc(2025, 2, 28, 12),
        utc(2026, 2, 28, 12),
        utc(2027, 2, 28, 12),
        utc(2028, 2, 29, 12),
    ]
    assert add_intervals(anchor, "month", 12, 4) == utc(2028, 2, 29, 12)
    assert add_intervals(utc(1896, 2, 29), "year", 4, 1) == utc(1900, 2, 28)


def test_period_containing_examples() -> None:
    anchor = utc(2024, 1, 31, 10)
    assert period_containing(anchor, "month", 1, utc(2024, 2, 29, 9, 59)) == (
        anchor,
        utc(2024, 2, 29, 10),
    )
    assert period_containing(anchor, "month", 1, utc(2024, 3, 15)) == (
        utc(2024, 2, 29, 10),
        utc(2024, 3, 31, 10),
    )
    assert next_boundary(anchor, "week", 2, utc(2024, 2, 1)) == utc(2024, 2, 14, 10)


def test_results_are_utc_even_for_other_aware_inputs() -> None:
    plus_two = timezone(timedelta(hours=2))
    anchor = datetime(2024, 3, 1, 1, 0, tzinfo=plus_two)  # 2024-02-29 23:00 UTC
    assert add_intervals(anchor, "month", 1, 1) == utc(2024, 3, 29, 23)
    assert add_intervals(anchor, "month", 1, 1).utcoffset() == timedelta(0)


def test_rejects_naive_datetimes() -> None:
    naive = datetime(2024, 1, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        add_intervals(naive, "month", 1, 1)
    with pytest.raises(ValueError):
        period_containing(utc(2024, 1, 1), "month", 1, naive)
    with pytest.raises(ValueError):
        next_boundary(naive, "day", 1, utc(2024, 1, 1))
    with pytest.raises(ValueError):
        trial_end(naive, 14)


@pytest.mark.parametrize(
    ("interval", "count", "n"),
    [("fortnight", 1, 1), ("month", 0, 1), ("day", -1, 1), ("week", 1, -1), ("year", True, 1)],
)
def test_rejects_bad_steps(interval: str, count: int, n: int) -> None:
    with pytest.raises(ValueError):
        add_intervals(utc(2024, 1, 1), interval, count, n)  # type: ignore[arg-type]


def test_period_containing_rejects_time_before_anchor() -> None:
    with pytest.raises(ValueError, match="before the anchor"):
        period_containing(utc(2024, 1, 1), "day", 1, utc(2023, 12, 31))


def test_out_of_range_is_value_error() -> None:
    with pytest.raises(ValueError, match="range"):
        add_intervals(utc(9999, 1, 1), "year", 1, 1)
    with pytest.raises(ValueError, match="range"):
        add_intervals(utc(9999, 12, 1), "week", 12, 12)


@given(anchors, st.integers(min_value=1, max_value=730))
def test_trial_end_is_exact_days(start: datetime, days: int) -> None:
    assert trial_end(start, days) == start + timedelta(days=days)
    notice = trial_will_end_at(start, days)
    assert notice == max(start, start + timedelta(days=days) - TRIAL_WILL_END_NOTICE)


def test_trial_examples_and_bounds() -> None:
    start = utc(2024, 1, 1, 8)
    assert trial_end(start, 0) is None
    assert trial_will_end_at(start, 0) is None
    assert trial_will_end_at(start, 14) == utc(2024, 1, 12, 8)
    assert trial_will_end_at(start, 2) == start
    assert TRIAL_WILL_END_NOTICE == timedelta(days=3)
    for bad in (-1, 731):
        with pytest.raises(ValueError):
            trial_end(start, bad)
