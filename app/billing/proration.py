"""Proration of amounts (int minor units) by time, without losing a minor unit.

The unused part of an amount is ``amount * remaining / period`` where both
durations are exact (seconds, including their microsecond fraction), rounded
half-to-even; the used part is the rest, so ``used + unused == amount`` always.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from app.billing.periods import to_utc

_TICK = timedelta(microseconds=1)


def _check_amount(amount: int, name: str) -> None:
    """Money is a non-negative int of minor units; anything else is a caller bug."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError(f"{name} must be a non-negative int (minor units), got {amount!r}")


def unused_fraction(start: datetime, end: datetime, at: datetime) -> Fraction:
    """Exact share of [start, end) still ahead at `at`, from 1 (at start) to 0 (at end)."""
    start, end, at = to_utc(start, "start"), to_utc(end, "end"), to_utc(at, "at")
    if not start < end:
        raise ValueError("period start must be before its end")
    if not start <= at <= end:
        raise ValueError("the change time must lie within the period [start, end]")
    return Fraction((end - at) // _TICK, (end - start) // _TICK)


def split(amount: int, start: datetime, end: datetime, at: datetime) -> tuple[int, int]:
    """(used, unused) of amount for [start, end) changed at `at`, by time; sums to amount."""
    _check_amount(amount, "amount")
    unused = round(amount * unused_fraction(start, end, at))
    return amount - unused, unused


@dataclass(frozen=True)
class PlanChange:
    """Net money movement of a plan change: a charge collected now or a credit kept for renewals."""

    charge: int
    credit: int

    def __post_init__(self) -> None:
        """Enforce the invariant: both non-negative, at most one non-zero."""
        _check_amount(self.charge, "charge")
        _check_amount(self.credit, "credit")
        if self.charge and self.credit:
            raise ValueError("a plan change is either a charge or a credit, not both")

    @property
    def net(self) -> int:
        """Signed net amount: positive to charge, negative to credit."""
        return self.charge - self.credit


def change_plan(
    old_amount: int,
    new_amount: int,
    start: datetime,
    end: datetime,
    at: datetime,
    *,
    new_period_end: datetime | None = None,
) -> PlanChange:
    """Net effect of switching plans at `at`: the new plan's price for the rest of the period
    [start, end) minus the old plan's unused part.

    When the new plan bills another period (month to year, say), `new_period_end` is the end
    of its period starting at `start`, and its price for the rest is prorated over that
    period: half a month left on a switch to a yearly plan costs 1/24 of the year's price,
    not half of it. Without it the new plan bills the same period as the old one.
    """
    _check_amount(old_amount, "old_amount")
    _check_amount(new_amount, "new_amount")
    unused = unused_fraction(start, end, at)  # also checks the period and `at`
    new_end = end if new_period_end is None else to_utc(new_period_end, "new_period_end")
    if not start < new_end:
        raise ValueError("the new plan's period must end after it starts")
    # The rest's share of the new plan's period: the unused share of this one, rescaled.
    rest_share = unused * Fraction((end - start) // _TICK, (new_end - start) // _TICK)
    net = round(new_amount * rest_share) - split(old_amount, start, end, at)[1]
    return PlanChange(charge=max(net, 0), credit=max(-net, 0))


def apply_credit(amount_due: int, credit_balance: int) -> tuple[int, int]:
    """(amount to charge, credit left) when a credit balance pays part or all of a renewal."""
    _check_amount(amount_due, "amount_due")
    _check_amount(credit_balance, "credit_balance")
    used = min(amount_due, credit_balance)
    return amount_due - used, credit_balance - used
