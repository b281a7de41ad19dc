"""Exhaustive table test and properties for the subscription status machine."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.billing.subscription_state import (
    TERMINAL_STATUSES,
    TRANSITIONS,
    Event,
    InvalidTransition,
    Status,
    allowed_events,
    can_transition,
    initial_status,
    transition,
)

S, E = Status, Event

# Written out independently of the implementation: (status, event) -> next status.
EXPECTED: dict[tuple[Status, Event], Status] = {
    (S.INCOMPLETE, E.FIRST_PAYMENT_SUCCEEDED): S.ACTIVE,
    (S.INCOMPLETE, E.FIRST_PAYMENT_FAILED): S.INCOMPLETE_EXPIRED,
    (S.INCOMPLETE, E.CANCEL): S.CANCELED,
    (S.TRIALING, E.TRIAL_ENDED): S.ACTIVE,
    (S.TRIALING, E.RENEWAL_SUCCEEDED): S.ACTIVE,
    (S.TRIALING, E.RENEWAL_FAILED): S.PAST_DUE,
    (S.TRIALING, E.RETRIES_EXHAUSTED): S.CANCELED,
    (S.TRIALING, E.PAUSE): S.PAUSED,
    (S.TRIALING, E.CANCEL): S.CANCELED,
    (S.TRIALING, E.CHANGE_PLAN): S.TRIALING,
    (S.ACTIVE, E.RENEWAL_SUCCEEDED): S.ACTIVE,
    (S.ACTIVE, E.RENEWAL_FAILED): S.PAST_DUE,
    (S.ACTIVE, E.RETRIES_EXHAUSTED): S.CANCELED,
    (S.ACTIVE, E.PAUSE): S.PAUSED,
    (S.ACTIVE, E.CANCEL): S.CANCELED,
    (S.ACTIVE, E.CHANGE_PLAN): S.ACTIVE,
    (S.PAST_DUE, E.RENEWAL_SUCCEEDED): S.ACTIVE,
    (S.PAST_DUE, E.RENEWAL_FAILED): S.PAST_DUE,
    (S.PAST_DUE, E.RETRIES_EXHAUSTED): S.CANCELED,
    (S.PAST_DUE, E.PAUSE): S.PAUSED,
    (S.PAST_DUE, E.CANCEL): S.CANCELED,
    (S.PAST_DUE, E.CHANGE_PLAN): S.PAST_DUE,
    (S.PAUSED, E.RESUME): S.ACTIVE,
    (S.PAUSED, E.CANCEL): S.CANCELED,
}

ALL_PAIRS = list(itertools.product(Status, Event))
statuses = st.sampled_from(Status)
events = st.sampled_from(Event)


def test_enum_values_are_the_public_api_strings() -> None:
    assert [s.value for s in Status] == [
        "incomplete", "trialing", "active", "past_due", "paused", "canceled", "incomplete_expired",
    ]  # fmt: skip
    assert [e.value for e in Event] == [
        "first_payment_succeeded", "first_payment_failed", "trial_ended", "renewal_succeeded",
        "renewal_failed", "retries_exhausted", "pause", "resume", "cancel", "change_plan",
    ]  # fmt: skip


@pytest.mark.parametrize(("status", "event"), ALL_PAIRS)
def test_exhaustive_table(status: Status, event: Event) -> None:
    if (status, event) in EXPECTED:
        assert transition(status, event) is EXPECTED[status, event]
        assert can_transition(status, event)
    else:
        with pytest.raises(InvalidTransition) as info:
            transition(status, event)
        assert (info.value.status, info.value.event) == (status, event)
        assert not can_transition(status, event)


def test_table_constant_matches_expected() -> None:
    flat = {(s, e): nxt for s, row in TRANSITIONS.items() for e, nxt in row.items()}
    assert flat == EXPECTED
    assert set(TRANSITIONS) == set(Status)


@given(st.sampled_from(sorted(TERMINAL_STATUSES)), events)
def test_terminal_states_reject_everything(status: Status, event: Event) -> None:
    assert allowed_events(status) == frozenset()
    with pytest.raises(InvalidTransition):
        transition(status, event)


def test_terminal_statuses() -> None:
    assert TERMINAL_STATUSES == {S.CANCELED, S.INCOMPLETE_EXPIRED}
    assert {s for s in Status if not allowed_events(s)} == TERMINAL_STATUSES


@given(statuses)
def test_cancel_allowed_from_every_non_terminal_status(status: Status) -> None:
    assert can_transition(status, E.CANCEL) == (status not in TERMINAL_STATUSES)


@given(statuses)
def test_resume_only_from_paused(status: Status) -> None:
    if status is S.PAUSED:
        assert transition(status, E.RESUME) is S.ACTIVE
    else:
        with pytest.raises(InvalidTransition) as info:
            transition(status, E.RESUME)
        assert info.value.code in {
            "subscription_not_paused",
            "subscription_canceled",
            "subscription_incomplete_expired",
        }


@given(statuses, events)
def test_codes_are_stable_strings(status: Status, event: Event) -> None:
    if can_transition(status, event):
        return
    with pytest.raises(InvalidTransition) as info:
        transition(status, event)
    assert info.value.code in {
        "subscription_canceled",
        "subscription_incomplete_expired",
        "subscription_not_paused",
        "subscription_not_active",
        "subscription_not_incomplete",
        "subscription_not_trialing",
        "subscription_paused",
    }
    assert info.value.code in str(info.value)


@pytest.mark.parametrize(
    ("status", "event", "code"),
    [
        (S.CANCELED, E.RESUME, "subscription_canceled"),
        (S.CANCELED, E.CANCEL, "subscription_canceled"),
        (S.INCOMPLETE_EXPIRED, E.CANCEL, "subscription_incomplete_expired"),
        (S.ACTIVE, E.RESUME, "subscription_not_paused"),
        (S.PAUSED, E.PAUSE, "subscription_paused"),
        (S.PAUSED, E.CHANGE_PLAN, "subscription_paused"),
        (S.INCOMPLETE, E.PAUSE, "subscription_not_active"),
        (S.INCOMPLETE, E.CHANGE_PLAN, "subscription_not_active"),
        (S.ACTIVE, E.FIRST_PAYMENT_SUCCEEDED, "subscription_not_incomplete"),
        (S.ACTIVE, E.TRIAL_ENDED, "subscription_not_trialing"),
    ],
)
def test_error_code_examples(status: Status, event: Event, code: str) -> None:
    with pytest.raises(InvalidTransition) as info:
        transition(status, event)
    assert info.value.code == code


@given(statuses, st.lists(events, max_size=30))
def test_random_walks_follow_the_table_and_terminal_is_absorbing(
    start: Status, walk: list[Event]
) -> None:
    status, ended = start, start in TERMINAL_STATUSES
    for event in walk:
        if (status, event) in EXPECTED:
            status = transition(status, event)
        else:
            with pytest.raises(InvalidTransition):
                transition(status, event)
        assert not (ended and status not in TERMINAL_STATUSES)
        ended = status in TERMINAL_STATUSES


def test_dunning_lifecycle() -> None:
    status = transition(S.ACTIVE, E.RENEWAL_FAILED)
    assert status is S.PAST_DUE
    status = transition(status, E.RENEWAL_FAILED)
    assert transition(status, E.RENEWAL_SUCCEEDED) is S.ACTIVE
    assert transition(status, E.RETRIES_EXHAUSTED) is S.CANCELED


def test_accepts_plain_strings() -> None:
    assert transition("paused", "resume") is S.ACTIVE  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        transition("bogus", "resume")  # type: ignore[arg-type]


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[S.ACTIVE][E.RESUME] = S.ACTIVE  # type: ignore[index]


def test_initial_status() -> None:
    assert initial_status(0) is S.INCOMPLETE
    assert initial_status(14) is S.TRIALING
    for bad in (-1, 731):
        with pytest.raises(ValueError):
            initial_status(bad)
