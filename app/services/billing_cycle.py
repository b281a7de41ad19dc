"""The subscription's clockwork: what falls due when, doing it, and reacting to payments.

`next_due` reads a subscription and says what happens next and when (trial notice, trial
end, renewal, scheduled cancellation, dunning retry). `apply_due` does it at that time,
and `on_payment_settled` moves the subscription when one of its payments succeeds or fails.
The same code runs for real time and for test clocks; only the `until` time differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.billing import dunning, periods
from app.billing.proration import apply_credit
from app.billing.subscription_state import Event, Status, transition
from app.events import outbox
from app.models import (
    Payment,
    PaymentPurpose,
    PaymentStatus,
    Plan,
    Subscription,
    Tenant,
)
from app.models.uow import UnitOfWork
from app.services import locks
from app.services.clocks import now_for
from app.services.payments import pending_payment
from app.telemetry import metrics

DueKind = Literal["trial_will_end", "trial_end", "renew", "cancel", "retry", "expire"]
#: How long a new subscription may stay `incomplete` (its first payment waiting on the
#: customer, e.g. 3-D Secure) before it expires, as at Stripe.
INCOMPLETE_EXPIRY = timedelta(hours=23)
#: The failure of a first payment stopped at its provider when its subscription expired.
PAYMENT_EXPIRED = ("payment_expired",
                   "The customer did not complete the payment in time; it was canceled.")


@dataclass(frozen=True)
class Due:
    kind: DueKind
    at: datetime


def next_due(sub: Subscription) -> Due | None:
    """The next thing that happens to `sub` by itself, or None while it waits on something."""
    if sub.status is Status.TRIALING and sub.trial_end is not None:
        if sub.current_period_start >= sub.trial_end:
            return None  # the trial-end charge is in flight; its outcome moves us on
        if not sub.trial_will_end_sent:
            notice = max(sub.current_period_start, sub.trial_end - periods.TRIAL_WILL_END_NOTICE)
            return Due("trial_will_end", notice)
        return Due("cancel" if sub.cancel_at_period_end else "trial_end", sub.trial_end)
    if sub.status is Status.ACTIVE:
        return Due("cancel" if sub.cancel_at_period_end else "renew", sub.current_period_end)
    if sub.status is Status.PAST_DUE and sub.retry_at is not None:
        return Due("retry", sub.retry_at)
    if sub.status is Status.INCOMPLETE:
        return Due("expire", _expires_at(sub))
    return None


def _expires_at(sub: Subscription) -> datetime:
    """When an `incomplete` subscription expires if its first payment has not succeeded."""
    return sub.created_at + INCOMPLETE_EXPIRY


def schedule(sub: Subscription) -> None:
    """Index the subscription for the scheduler at its next due time."""
    due = next_due(sub)
    sub.next_event_at = due.at if due else None


def apply_due(uow: UnitOfWork, sub: Subscription, due: Due) -> Payment | None:
    """Do what fell due at `due.at`; returns a payment to charge now (`pending`) or to stop
    at its provider (`requires_action`, an expiry), if any."""
    session = uow.session
    payment: Payment | None = None
    if due.kind == "trial_will_end":
        sub.trial_will_end_sent = True
        outbox.record_subscription(session, "subscription.trial_will_end", sub)
    elif due.kind == "cancel":
        cancel(session, sub, due.at, "cancellation_requested")
    elif due.kind in ("trial_end", "renew"):
        plan = session.get_one(Plan, sub.plan_id)
        start = sub.current_period_end
        sub.current_period_start = start
        sub.current_period_end = periods.next_boundary(
            sub.billing_anchor,
            plan.interval,
            plan.interval_count,
            start,
        )
        payment = charge_period(uow, sub, plan, start)
        if payment is None:
            _paid(session, sub)
    elif due.kind == "expire":
        payment = _expire_if_unpaid(session, sub, due.at)
        if sub.status is Status.INCOMPLETE:  # the first payment's outcome decides
            if payment is None:
                sub.next_event_at = None  # it is being charged
            return payment  # to stop at its provider; the caller keeps the sub a lease ahead
    schedule(sub)
    if due.kind == "retry":
        retry_id = sub.latest_payment_id
        assert retry_id is not None, "a dunning retry charges the latest payment again"
        # locked after its subscription, which the caller locked
        retried = locks.lock(session, payment_ids=[retry_id]).payments[retry_id]
        if retried.status is PaymentStatus.FAILED:
            retried.status = PaymentStatus.PENDING
            payment = retried
        sub.next_event_at = None  # the retry's outcome reschedules (on_payment_settled)
    return payment


def charge_period(
    uow: UnitOfWork, sub: Subscription, plan: Plan, start: datetime
) -> Payment | None:
    """The payment of the period starting at `start`, less credit; None when credit covers it."""
    amount, sub.credit_balance = apply_credit(plan.amount, sub.credit_balance)
    if amount == 0:
        return None
    payment = subscription_payment(uow, sub, amount, plan.currency, PaymentPurpose.CYCLE,
                                   period_start=start)
    sub.latest_payment_id = payment.id
    return payment


def subscription_payment(
    uow: UnitOfWork, sub: Subscription, amount: int, currency: str, purpose: PaymentPurpose,
    *, period_start: datetime | None = None, description: str | None = None,
) -> Payment:
    """A pending payment of the subscription's customer with its payment method, inserted
    at the commit (`UnitOfWork.insert`: no ORM flush; a renewal round's in one batch)."""
    payment = pending_payment(
        tenant_id=sub.tenant_id,
        livemode=sub.livemode,
        customer_id=sub.customer_id,
        payment_method_id=sub.payment_method_id,
        amount=amount,
        currency=currency,
        purpose=purpose,
        subscription_id=sub.id,
        period_start=period_start,
        description=description,
    )
    uow.insert(payment)
    outbox.record_payment(uow.session, "payment.created", payment)
    return payment


def _expire_if_unpaid(session: Session, sub: Subscription, at: datetime) -> Payment | None:
    """End an `incomplete` subscription whose first payment did not succeed in time.

    A first payment still being charged (pending, processing, unknown) is left to finish:
    its outcome activates or expires the subscription. One waiting on the customer is
    returned, to be stopped at its provider (charge.void_claimed) so that finishing it
    later takes no money; that outcome (failed `payment_expired`, or succeeded if the
    customer finished just before) then expires or activates the subscription.
    """
    first = session.get(Payment, sub.latest_payment_id) if sub.latest_payment_id else None
    if first is not None and first.status is PaymentStatus.REQUIRES_ACTION:
        return first
    if first is None or first.status is PaymentStatus.FAILED:
        _expire(session, sub, at)
    return None


def _expire(session: Session, sub: Subscription, at: datetime) -> None:
    sub.status = transition(sub.status, Event.FIRST_PAYMENT_FAILED)
    sub.canceled_at = at
    sub.cancellation_reason = "payment_failed"
    outbox.record_subscription(session, "subscription.canceled", sub)


def cancel(session: Session, sub: Subscription, at: datetime, reason: str) -> None:
    """End the subscription at `at`."""
    sub.status = transition(sub.status, Event.CANCEL)
    sub.canceled_at = at
    sub.cancellation_reason = reason
    sub.retry_at = None
    outbox.record_subscription(session, "subscription.canceled", sub)


def on_payment_settled(session: Session, payment: Payment, *, hard: bool = False) -> None:
    """Move the payment's subscription after the payment succeeded or failed.

    The caller has locked the subscription row in this transaction (before the payment's).
    """
    if payment.subscription_id is None or payment.purpose is not PaymentPurpose.CYCLE:
        return
    sub = session.get_one(Subscription, payment.subscription_id)
    if sub.latest_payment_id != payment.id or sub.status in (
        Status.CANCELED,
        Status.PAUSED,
        Status.INCOMPLETE_EXPIRED,
    ):
        return
    if payment.status is PaymentStatus.SUCCEEDED:
        _paid(session, sub)
    elif payment.status is PaymentStatus.FAILED:
        _unpaid(session, sub, payment, hard=hard)
    schedule(sub)


def _paid(session: Session, sub: Subscription) -> None:
    if sub.status is Status.PAST_DUE:
        metrics.count("DunningTransitions", Transition="recovered")
    first = sub.status in (Status.INCOMPLETE, Status.TRIALING)
    incomplete = sub.status is Status.INCOMPLETE
    sub.status = transition(
        sub.status, Event.FIRST_PAYMENT_SUCCEEDED if incomplete else Event.RENEWAL_SUCCEEDED
    )
    sub.first_failure_at = None
    sub.retry_at = None
    kind = "subscription.activated" if first else "subscription.renewed"
    outbox.record_subscription(session, kind, sub)


def _unpaid(session: Session, sub: Subscription, payment: Payment, *, hard: bool) -> None:
    at = sub.retry_at or payment.period_start or payment.created_at
    if sub.status is Status.INCOMPLETE:
        stopped = payment.failure_code == PAYMENT_EXPIRED[0]
        _expire(session, sub, _expires_at(sub) if stopped else at)
        return
    sub.first_failure_at = sub.first_failure_at or at
    days = retry_days(session, sub.tenant_id)
    decision = dunning.after_failure(
        hard=hard,
        first_failure_at=sub.first_failure_at,
        failed_attempts=dunning.failed_rounds(sub.first_failure_at, at, days),
        retry_days=days,
    )
    if isinstance(decision, dunning.Retry):
        was = sub.status
        sub.status = transition(sub.status, Event.RENEWAL_FAILED)
        sub.retry_at = decision.at
        if was is not Status.PAST_DUE:
            outbox.record_subscription(session, "subscription.past_due", sub)
            metrics.count("DunningTransitions", Transition="past_due")
    else:
        sub.status = transition(sub.status, Event.RETRIES_EXHAUSTED)
        # A retry asked for early (POST /payments/{id}/retry) counts as the scheduled one
        # it stands in for, dated then; the subscription still ends now, not in the future.
        sub.canceled_at = min(at, now_for(session, sub.test_clock_id))
        sub.cancellation_reason = "payment_failed"
        sub.retry_at = None
        outbox.record_subscription(session, "subscription.canceled", sub)
        metrics.count("DunningTransitions", Transition="canceled")


def retry_days(session: Session, tenant_id: str) -> tuple[int, ...]:
    """The tenant's dunning schedule (days after the first failure), or the default."""
    days = session.scalar(select(Tenant.dunning_retry_days).where(Tenant.id == tenant_id))
    return tuple(days) if days else dunning.DEFAULT_RETRY_DAYS
