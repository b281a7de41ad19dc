"""Subscription status machine: which events are allowed in which status.

A new subscription starts ``trialing`` when its plan has trial days, otherwise
``incomplete`` until its first payment (see :func:`initial_status`).

Transition table (anything not listed raises :class:`InvalidTransition`)::

    incomplete  first_payment_succeeded -> active
                first_payment_failed    -> incomplete_expired
                cancel                  -> canceled
    trialing    trial_ended             -> active   (trial over, first paid period began)
                renewal_succeeded       -> active   (trial-end charge paid)
                renewal_failed          -> past_due (trial-end charge soft-declined)
                retries_exhausted       -> canceled (trial-end charge hard-declined)
                pause                   -> paused
                cancel                  -> canceled
                change_plan             -> trialing
    active      renewal_succeeded       -> active
                renewal_failed          -> past_due
                retries_exhausted       -> canceled (hard decline: no retries)
                pause                   -> paused
                cancel                  -> canceled
                change_plan             -> active
    past_due    renewal_succeeded       -> active   (a retry succeeded)
                renewal_failed          -> past_due (a retry failed, retries remain)
                retries_exhausted       -> canceled (cancellation_reason payment_failed)
                pause                   -> paused   (pending retries are dropped)
                cancel                  -> canceled
                change_plan             -> past_due
    paused      resume                  -> active   (new period from resume time, charged at once)
                cancel                  -> canceled
    canceled, incomplete_expired: terminal, accept nothing.

The charge at trial end is reported with the renewal events; they are accepted
straight from ``trialing``, so sending ``trial_ended`` first is optional.
Cancel "at period end" changes nothing until the period ends; send ``cancel``
then. ``retries_exhausted`` is also the event for a hard-declined renewal.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from app.billing.periods import MAX_TRIAL_DAYS


class Status(StrEnum):
    """Lifecycle status of a subscription (values as exposed by the public API)."""

    INCOMPLETE = "incomplete"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    PAUSED = "paused"
    CANCELED = "canceled"
    INCOMPLETE_EXPIRED = "incomplete_expired"


class Event(StrEnum):
    """Something that happened to a subscription: a payment outcome or a customer action."""

    FIRST_PAYMENT_SUCCEEDED = "first_payment_succeeded"
    FIRST_PAYMENT_FAILED = "first_payment_failed"
    TRIAL_ENDED = "trial_ended"
    RENEWAL_SUCCEEDED = "renewal_succeeded"
    RENEWAL_FAILED = "renewal_failed"
    RETRIES_EXHAUSTED = "retries_exhausted"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    CHANGE_PLAN = "change_plan"


TERMINAL_STATUSES: Final[frozenset[Status]] = frozenset(
    {Status.CANCELED, Status.INCOMPLETE_EXPIRED}
)

_BILLING: Final[dict[Event, Status]] = {
    Event.RENEWAL_SUCCEEDED: Status.ACTIVE,
    Event.RENEWAL_FAILED: Status.PAST_DUE,
    Event.RETRIES_EXHAUSTED: Status.CANCELED,
    Event.PAUSE: Status.PAUSED,
    Event.CANCEL: Status.CANCELED,
}

_TABLE: Final[dict[Status, dict[Event, Status]]] = {
    Status.INCOMPLETE: {
        Event.FIRST_PAYMENT_SUCCEEDED: Status.ACTIVE,
        Event.FIRST_PAYMENT_FAILED: Status.INCOMPLETE_EXPIRED,
        Event.CANCEL: Status.CANCELED,
    },
    Status.TRIALING: {
        **_BILLING,
        Event.TRIAL_ENDED: Status.ACTIVE,
        Event.CHANGE_PLAN: Status.TRIALING,
    },
    Status.ACTIVE: {**_BILLING, Event.CHANGE_PLAN: Status.ACTIVE},
    Status.PAST_DUE: {**_BILLING, Event.CHANGE_PLAN: Status.PAST_DUE},
    Status.PAUSED: {Event.RESUME: Status.ACTIVE, Event.CANCEL: Status.CANCELED},
    Status.CANCELED: {},
    Status.INCOMPLETE_EXPIRED: {},
}

#: The transition table, read-only: status -> {allowed event -> next status}.
TRANSITIONS: Final[Mapping[Status, Mapping[Event, Status]]] = MappingProxyType(
    {status: MappingProxyType(row) for status, row in _TABLE.items()}
)

_EVENT_NEEDS: Final[dict[Event, str]] = {
    Event.FIRST_PAYMENT_SUCCEEDED: "subscription_not_incomplete",
    Event.FIRST_PAYMENT_FAILED: "subscription_not_incomplete",
    Event.TRIAL_ENDED: "subscription_not_trialing",
    Event.RESUME: "subscription_not_paused",
}


def error_code(status: Status, event: Event) -> str:
    """Stable machine-readable code explaining why `event` is refused in `status`."""
    if status is Status.CANCELED:
        return "subscription_canceled"
    if status is Status.INCOMPLETE_EXPIRED:
        return "subscription_incomplete_expired"
    if event in _EVENT_NEEDS:
        return _EVENT_NEEDS[event]
    if status is Status.PAUSED:
        return "subscription_paused"
    return "subscription_not_active"


class InvalidTransition(Exception):
    """Raised when an action is not allowed in the subscription's current status."""

    def __init__(self, status: Status, event: Event) -> None:
        """Record the refused (status, event) pair and its stable error code."""
        self.status = Status(status)
        self.event = Event(event)
        self.code = error_code(self.status, self.event)
        super().__init__(
            f"{self.code}: cannot {self.event.value} a subscription that is {self.status.value}"
        )


def allowed_events(status: Status) -> frozenset[Event]:
    """Events accepted in `status`, e.g. to decide which actions to offer."""
    return frozenset(TRANSITIONS[Status(status)])


def can_transition(status: Status, event: Event) -> bool:
    """Whether `event` is allowed in `status`, without raising."""
    return Event(event) in TRANSITIONS[Status(status)]


def transition(status: Status, event: Event) -> Status:
    """The status after `event`; raises InvalidTransition when the status does not allow it."""
    status, event = Status(status), Event(event)
    try:
        return TRANSITIONS[status][event]
    except KeyError:
        raise InvalidTransition(status, event) from None


def initial_status(trial_days: int) -> Status:
    """Status of a newly created subscription: trialing with a trial, else incomplete."""
    if isinstance(trial_days, bool) or not isinstance(trial_days, int):
        raise ValueError(f"trial_days must be an int, got {trial_days!r}")
    if not 0 <= trial_days <= MAX_TRIAL_DAYS:
        raise ValueError(f"trial_days must be in 0..{MAX_TRIAL_DAYS}, got {trial_days}")
    return Status.TRIALING if trial_days > 0 else Status.INCOMPLETE
