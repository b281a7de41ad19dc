"""Properties and examples for the dunning (failed renewal retry) schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.billing.dunning import (
    DEFAULT_RETRY_DAYS,
    GiveUp,
    Retry,
    after_failure,
    failed_rounds,
    validate_retry_days,
)

FIRST = datetime(2024, 3, 10, 14, 5, tzinfo=UTC)
firsts = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
schedules = st.lists(st.integers(min_value=1, max_value=365), unique=True, max_size=10).map(
    lambda days: tuple(sorted(days))
)


def test_default_schedule_is_1_3_5_days() -> None:
    assert DEFAULT_RETRY_DAYS == (1, 3, 5)


def test_default_schedule_retries_from_first_failure_then_gives_up() -> None:
    got = [
        after_failure(hard=False, first_failure_at=FIRST, failed_attempts=k) for k in (1, 2, 3, 4)
    ]
    assert got == [
        Retry(at=datetime(2024, 3, 11, 14, 5, tzinfo=UTC)),
        Retry(at=datetime(2024, 3, 13, 14, 5, tzinfo=UTC)),
        Retry(at=datetime(2024, 3, 15, 14, 5, tzinfo=UTC)),
        GiveUp(),
    ]


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5])
def test_hard_decline_gives_up_immediately(attempt: int) -> None:
    assert after_failure(hard=True, first_failure_at=FIRST, failed_attempts=attempt) == GiveUp()


@given(schedules, firsts, st.integers(min_value=1, max_value=15))
def test_random_schedules(days: tuple[int, ...], first: datetime, attempt: int) -> None:
    outcome = after_failure(
        hard=False, first_failure_at=first, failed_attempts=attempt, retry_days=days
    )
    if attempt <= len(days):
        assert outcome == Retry(at=first + timedelta(days=days[attempt - 1]))
    else:
        assert outcome == GiveUp()


@given(schedules, firsts)
def test_retry_times_strictly_increase_and_follow_first_failure(
    days: tuple[int, ...], first: datetime
) -> None:
    times = [
        after_failure(hard=False, first_failure_at=first, failed_attempts=k, retry_days=days)
        for k in range(1, len(days) + 1)
    ]
    ats = [t.at for t in times if isinstance(t, Retry)]
    assert len(ats) == len(days)
    assert all(first < a < b for a, b in pairwise(ats))
    assert all(at > first for at in ats)


@given(schedules)
def test_valid_schedules_pass_validation(days: tuple[int, ...]) -> None:
    validate_retry_days(days)
    validate_retry_days(list(days))


@pytest.mark.parametrize(
    "bad",
    [(0, 1), (-1,), (3, 3), (5, 3), tuple(range(1, 12)), (1, True), ("1",), (1, "2")],
)
def test_invalid_schedules_are_rejected(bad: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        validate_retry_days(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        after_failure(hard=False, first_failure_at=FIRST, failed_attempts=1, retry_days=bad)  # type: ignore[arg-type]


def test_empty_schedule_means_no_retries() -> None:
    validate_retry_days(())
    assert (
        after_failure(hard=False, first_failure_at=FIRST, failed_attempts=1, retry_days=())
        == GiveUp()
    )


def test_ten_retries_allowed() -> None:
    validate_retry_days(tuple(range(1, 11)))


@pytest.mark.parametrize("attempts", [0, -1, True])
def test_failed_attempts_must_be_positive_int(attempts: int) -> None:
    with pytest.raises(ValueError):
        after_failure(hard=False, first_failure_at=FIRST, failed_attempts=attempts)


def test_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        after_failure(hard=False, first_failure_at=datetime(2024, 1, 1), failed_attempts=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        Retry(at=datetime(2024, 1, 1))


@given(schedules, firsts, st.integers(min_value=1, max_value=15))
def test_a_failure_at_each_scheduled_retry_counts_as_the_next_round(
    days: tuple[int, ...], first: datetime, attempt: int
) -> None:
    """Failing at round k's retry time leads to round k+1's retry, until the schedule ends."""
    at = first
    for k in range(1, min(attempt, len(days) + 1) + 1):
        assert failed_rounds(first, at, days) == k
        outcome = after_failure(hard=False, first_failure_at=first, failed_attempts=k,
                                retry_days=days)
        if k > len(days):
            assert outcome == GiveUp()
            break
        assert isinstance(outcome, Retry)
        at = outcome.at
