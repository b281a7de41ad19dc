"""Properties and examples for time proration of integer minor-unit amounts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.billing.proration import PlanChange, apply_credit, change_plan, split, unused_fraction

amounts = st.integers(min_value=0, max_value=99_999_999)
starts = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
lengths = st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=4000))
fractions = st.fractions(min_value=0, max_value=1)

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 1, 31, tzinfo=UTC)
MID = datetime(2024, 1, 16, tzinfo=UTC)


def point(start: datetime, length: timedelta, where: Fraction) -> datetime:
    """A time inside [start, start + length], `where` of the way through (to the microsecond)."""
    ticks = length // timedelta(microseconds=1)
    return start + timedelta(microseconds=int(ticks * where))


@given(amounts, starts, lengths, fractions)
def test_used_plus_unused_is_amount(
    amount: int, start: datetime, length: timedelta, f: Fraction
) -> None:
    used, unused = split(amount, start, start + length, point(start, length, f))
    assert used + unused == amount
    assert 0 <= unused <= amount
    assert 0 <= used <= amount


@given(amounts, starts, lengths, fractions)
def test_unused_is_the_half_even_rounded_exact_share(
    amount: int, start: datetime, length: timedelta, f: Fraction
) -> None:
    at = point(start, length, f)
    tick = timedelta(microseconds=1)
    exact = Fraction(amount * ((start + length - at) // tick), length // tick)
    _, unused = split(amount, start, start + length, at)
    assert abs(unused - exact) <= Fraction(1, 2)
    if abs(unused - exact) == Fraction(1, 2):
        assert unused % 2 == 0


@given(amounts, starts, lengths, fractions, fractions)
def test_unused_is_monotone_non_increasing_in_at(
    amount: int, start: datetime, length: timedelta, f: Fraction, g: Fraction
) -> None:
    early, late = sorted((point(start, length, f), point(start, length, g)))
    end = start + length
    assert split(amount, start, end, early)[1] >= split(amount, start, end, late)[1]


@given(amounts, starts, lengths)
def test_period_ends(amount: int, start: datetime, length: timedelta) -> None:
    assert split(amount, start, start + length, start) == (0, amount)
    assert split(amount, start, start + length, start + length) == (amount, 0)


def test_examples_round_half_to_even() -> None:
    assert split(3000, START, END, MID) == (1500, 1500)
    two_seconds = START + timedelta(seconds=2)
    one_second = START + timedelta(seconds=1)
    assert split(1, START, two_seconds, one_second) == (1, 0)  # 0.5 -> 0
    assert split(3, START, two_seconds, one_second) == (1, 2)  # 1.5 -> 2
    assert split(5, START, two_seconds, one_second) == (3, 2)  # 2.5 -> 2
    three = START + timedelta(seconds=3)
    assert split(100, START, three, one_second) == (33, 67)  # 66.67 -> 67


def test_half_period_upgrade_charges_exactly_1500() -> None:
    assert change_plan(3000, 6000, START, END, MID) == PlanChange(charge=1500, credit=0)


def test_half_period_downgrade_credits_exactly_1500() -> None:
    assert change_plan(6000, 3000, START, END, MID) == PlanChange(charge=0, credit=1500)


@given(amounts, amounts, starts, lengths, fractions)
def test_change_plan_is_new_unused_minus_old_unused(
    old: int, new: int, start: datetime, length: timedelta, f: Fraction
) -> None:
    end, at = start + length, point(start, length, f)
    change = change_plan(old, new, start, end, at)
    assert change.charge >= 0 and change.credit >= 0
    assert change.charge == 0 or change.credit == 0
    assert change.net == split(new, start, end, at)[1] - split(old, start, end, at)[1]
    if new >= old:
        assert change.credit == 0
    else:
        assert change.charge == 0


@given(amounts, amounts, starts, lengths)
def test_change_at_period_start_is_full_difference(
    old: int, new: int, start: datetime, length: timedelta
) -> None:
    assert change_plan(old, new, start, start + length, start).net == new - old
    assert change_plan(old, new, start, start + length, start + length) == PlanChange(0, 0)


@given(amounts, amounts)
def test_apply_credit_conserves_money(due: int, balance: int) -> None:
    charge, left = apply_credit(due, balance)
    assert charge >= 0 and left >= 0
    assert (due - charge) == (balance - left)  # credit used == amount covered
    assert charge == 0 or left == 0
    assert charge == max(due - balance, 0)


def test_credit_carries_over_renewals_until_used_up() -> None:
    balance, charges = 2500, []
    for _ in range(3):
        charge, balance = apply_credit(1000, balance)
        charges.append(charge)
    assert charges == [0, 0, 500]
    assert balance == 0


@pytest.mark.parametrize("bad", [-1, True, Fraction(3, 2), "100"])
def test_rejects_non_int_or_negative_amounts(bad: object) -> None:
    with pytest.raises(ValueError):
        split(bad, START, END, MID)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        apply_credit(bad, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        change_plan(100, bad, START, END, MID)  # type: ignore[arg-type]


def test_rejects_bad_periods_and_naive_datetimes() -> None:
    with pytest.raises(ValueError):
        split(100, END, START, MID)
    with pytest.raises(ValueError):
        split(100, START, START, START)
    with pytest.raises(ValueError):
        split(100, START, END, END + timedelta(seconds=1))
    with pytest.raises(ValueError):
        split(100, START, END, START - timedelta(seconds=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        split(100, START, END, datetime(2024, 1, 16))


def test_plan_change_invariant() -> None:
    with pytest.raises(ValueError):
        PlanChange(charge=1, credit=1)
    with pytest.raises(ValueError):
        PlanChange(charge=-1, credit=0)
    assert PlanChange(charge=0, credit=7).net == -7


def test_unused_fraction_is_exact() -> None:
    assert unused_fraction(START, END, MID) == Fraction(1, 2)
    assert unused_fraction(
        START, START + timedelta(seconds=3), START + timedelta(seconds=1)
    ) == Fraction(2, 3)


@given(amounts, amounts, starts, lengths, fractions)
def test_a_new_period_equal_to_the_current_one_changes_nothing(
    old: int, new: int, start: datetime, length: timedelta, f: Fraction
) -> None:
    end, at = start + length, point(start, length, f)
    assert change_plan(old, new, start, end, at, new_period_end=end) == change_plan(
        old, new, start, end, at)


@given(amounts, amounts, starts, lengths, lengths, fractions)
def test_another_interval_prices_the_rest_over_the_new_plans_period(
    old: int, new: int, start: datetime, length: timedelta, new_length: timedelta, f: Fraction
) -> None:
    end, at = start + length, point(start, length, f)
    change = change_plan(old, new, start, end, at, new_period_end=start + new_length)
    tick = timedelta(microseconds=1)
    new_rest = round(new * Fraction((end - at) // tick, new_length // tick))
    assert change.net == new_rest - split(old, start, end, at)[1]


def test_half_a_month_left_on_a_switch_to_yearly_costs_15_days_of_the_year() -> None:
    start, end = datetime(2023, 6, 1, tzinfo=UTC), datetime(2023, 7, 1, tzinfo=UTC)
    at, year_end = datetime(2023, 6, 16, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)
    change = change_plan(3000, 36_000, start, end, at, new_period_end=year_end)
    # 36000 * 15/366 = 1475 for the 15 days left, against 1500 unused of the month: not
    # 18000 (half the year's price, as prorating over the month would say).
    assert change == PlanChange(charge=0, credit=1500 - 1475)
