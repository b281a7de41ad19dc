"""Dunning: when to retry a failed renewal charge and when to give up.

A soft-declined renewal is retried once per entry of ``retry_days``, each
retry scheduled that many days after the *first* failure (not after the
previous retry). A hard decline, or a failure with no retries left, gives up:
the caller then cancels the subscription with reason ``payment_failed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Final

from app.billing.periods import to_utc

DEFAULT_RETRY_DAYS: Final[tuple[int, ...]] = (1, 3, 5)
MAX_RETRIES: Final[int] = 10


@dataclass(frozen=True)
class Retry:
    """Retry the charge at `at` (UTC); the subscription stays past_due meanwhile."""

    at: datetime

    def __post_init__(self) -> None:
        """Keep retry times timezone-aware so schedulers never see naive datetimes."""
        to_utc(self.at, "at")


@dataclass(frozen=True)
class GiveUp:
    """Stop retrying: the renewal has failed for good (hard decline or retries exhausted)."""


def validate_retry_days(retry_days: Sequence[int]) -> None:
    """Check a tenant's retry schedule: strictly increasing positive ints, at most 10 entries."""
    days = list(retry_days)
    if len(days) > MAX_RETRIES:
        raise ValueError(f"at most {MAX_RETRIES} retries are allowed, got {len(days)}")
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in days):
        raise ValueError(f"retry days must be positive ints, got {days!r}")
    if any(a >= b for a, b in pairwise(days)):
        raise ValueError(f"retry days must be strictly increasing, got {days!r}")


def failed_rounds(
    first_failure_at: datetime, failed_at: datetime, retry_days: Sequence[int] = DEFAULT_RETRY_DAYS
) -> int:
    """Which failure of the schedule one at `failed_at` is (1 = the first, 2 = the first retry).

    A renewal's failures are counted by the schedule, not by the payment's attempts: a
    provider outage can fail one retry after several attempts, and still counts once.
    """
    first_failure_at = to_utc(first_failure_at, "first_failure_at")
    failed_at = to_utc(failed_at, "failed_at")
    return 1 + sum(1 for d in retry_days if first_failure_at + timedelta(days=d) <= failed_at)


def after_failure(
    *,
    hard: bool,
    first_failure_at: datetime,
    failed_attempts: int,
    retry_days: Sequence[int] = DEFAULT_RETRY_DAYS,
) -> Retry | GiveUp:
    """What to do after the failed_attempts-th failed charge of a renewal (1 = the first)."""
    first_failure_at = to_utc(first_failure_at, "first_failure_at")
    validate_retry_days(retry_days)
    if isinstance(failed_attempts, bool) or not isinstance(failed_attempts, int):
        raise ValueError(f"failed_attempts must be an int, got {failed_attempts!r}")
    if failed_attempts < 1:
        raise ValueError(f"failed_attempts must be >= 1, got {failed_attempts}")
    retries_done = failed_attempts - 1
    if hard or retries_done >= len(retry_days):
        return GiveUp()
    return Retry(at=first_failure_at + timedelta(days=retry_days[retries_done]))
