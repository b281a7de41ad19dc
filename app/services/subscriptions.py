"""Subscriptions: the actions a merchant takes on them through the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.billing import periods, proration
from app.billing.subscription_state import (
    TERMINAL_STATUSES,
    Event,
    InvalidTransition,
    Status,
    initial_status,
)
from app.billing.subscription_state import transition as move
from app.events import outbox
from app.ids import new_id
from app.models import (
    Customer,
    Payment,
    PaymentMethod,
    PaymentPurpose,
    PaymentStatus,
    Plan,
    Subscription,
)
from app.models.uow import UnitOfWork
from app.services import billing_cycle, locks, metadata
from app.services.clocks import now_for
from app.services.errors import Conflict, Invalid
from app.services.scope import Scope

Proration = Literal["create_prorations", "none"]


def create_subscription(
    uow: UnitOfWork,
    scope: Scope,
    *,
    customer_id: str,
    plan_id: str,
    payment_method_id: str,
    trial_days: int | None,
    metadata: dict[str, Any],
) -> Subscription:
    """Subscribe a customer: a trial, or the first period charged at once."""
    session = uow.session
    customer = scope.get(session, Customer, customer_id, lock=True)  # not being deleted
    plan = _active_plan(session, scope, plan_id)
    method = scope.get(session, PaymentMethod, payment_method_id)
    if method.customer_id != customer_id:
        raise Invalid("payment_method_id", "This payment method belongs to another customer.")
    now = now_for(session, customer.test_clock_id)
    days = plan.trial_days if trial_days is None else trial_days
    trial_end = periods.trial_end(now, days)
    anchor = trial_end or now
    sub = Subscription(
        id=new_id("sub"),
        tenant_id=scope.tenant_id,
        livemode=scope.livemode,
        customer_id=customer_id,
        plan_id=plan.id,
        payment_method_id=method.id,
        test_clock_id=customer.test_clock_id,
        status=initial_status(days),
        billing_anchor=anchor,
        current_period_start=now,
        current_period_end=trial_end or _period_end(plan, anchor),
        trial_end=trial_end,
        metadata_=metadata,
        created_at=now,
    )
    session.add(sub)
    session.flush()
    outbox.record_subscription(session, "subscription.created", sub)
    if trial_end is None:
        _charge_now(uow, sub, plan, now)
    billing_cycle.schedule(sub)
    return sub


def update(
    uow: UnitOfWork, scope: Scope, sub_id: str, *, payment_method_id: str | None,
    metadata_changes: dict[str, str],
) -> Subscription:
    """Pay with another of the customer's methods from now on (the renewals, and the
    remaining dunning retries of the payment in dunning); metadata merged."""
    session = uow.session
    sub = scope.get(session, Subscription, sub_id, lock=True)
    if sub.status in TERMINAL_STATUSES:
        raise Conflict(f"This subscription is {sub.status.value}; it cannot be updated.",
                       code="subscription_ended")
    if payment_method_id is not None:
        method = session.scalar(
            scope.query(PaymentMethod).where(PaymentMethod.id == payment_method_id)
        )
        if method is None or method.customer_id != sub.customer_id:
            raise Invalid("payment_method_id",
                          "This payment method does not belong to the subscription's customer.")
        sub.payment_method_id = method.id
        in_dunning = _in_dunning(session, sub)
        if in_dunning is not None:
            in_dunning.payment_method_id = method.id
    sub.metadata_ = metadata.merged(sub.metadata_, metadata_changes)
    outbox.record_subscription(session, "subscription.updated", sub)
    return sub


def retry_payment(uow: UnitOfWork, scope: Scope, payment_id: str) -> Payment:
    """Charge a payment in dunning again now, with its subscription's current method.

    It counts as the next scheduled retry: its failure is dated at that retry's time
    (`retry_at`), so the schedule goes on from there, or gives up after the last one.
    """
    session = uow.session
    found = scope.get(session, Payment, payment_id)
    sub = locks.lock(session, subscription_ids=[found.subscription_id]).subscriptions.get(
        found.subscription_id or "")  # the subscription, then (_in_dunning) the payment
    payment = _in_dunning(session, sub) if sub is not None else None
    if sub is None or payment is None or payment.id != found.id:
        raise Conflict(
            "Only the payment in dunning of a past_due subscription, waiting for its next "
            f"retry, can be retried now; this one is {found.status.value}.",
            code="payment_not_retryable",
        )
    payment.status = PaymentStatus.PENDING
    payment.payment_method_id = sub.payment_method_id
    sub.next_event_at = None  # the retry's outcome reschedules (on_payment_settled)
    uow.enqueue("charge_payment", payment.id)
    return payment


def _in_dunning(session: Session, sub: Subscription) -> Payment | None:
    """The payment a past_due subscription's next dunning retry will charge (locked), if
    it is waiting for it (not being charged right now)."""
    if sub.status is not Status.PAST_DUE or sub.latest_payment_id is None:
        return None
    payment = locks.lock(session, payment_ids=[sub.latest_payment_id]).payments[
        sub.latest_payment_id]
    waiting = payment.status is PaymentStatus.FAILED and payment.purpose is PaymentPurpose.CYCLE
    return payment if waiting else None


def cancel(uow: UnitOfWork, scope: Scope, sub_id: str, *, at_period_end: bool) -> Subscription:
    """Cancel now, or at the end of the current period."""
    sub = scope.get(uow.session, Subscription, sub_id, lock=True)
    _check(sub.status, Event.CANCEL)
    if at_period_end:
        if sub.status not in (Status.ACTIVE, Status.TRIALING):
            raise Conflict(
                "Only active or trialing subscriptions can cancel at period end.",
                code="subscription_not_active",
            )
        sub.cancel_at_period_end = True
    else:
        billing_cycle.cancel(
            uow.session, sub, now_for(uow.session, sub.test_clock_id), "cancellation_requested"
        )
    billing_cycle.schedule(sub)
    return sub


def pause(uow: UnitOfWork, scope: Scope, sub_id: str) -> Subscription:
    """Stop charging until resumed (pending dunning retries are dropped)."""
    sub = scope.get(uow.session, Subscription, sub_id, lock=True)
    sub.status = _check(sub.status, Event.PAUSE)
    sub.paused_at = now_for(uow.session, sub.test_clock_id)
    sub.retry_at = None
    sub.first_failure_at = None
    outbox.record_subscription(uow.session, "subscription.paused", sub)
    billing_cycle.schedule(sub)
    return sub


def resume(uow: UnitOfWork, scope: Scope, sub_id: str) -> Subscription:
    """Resume a paused subscription: a new period starts now and is charged at once."""
    sub = scope.get(uow.session, Subscription, sub_id, lock=True)
    sub.status = _check(sub.status, Event.RESUME)
    plan = uow.session.get_one(Plan, sub.plan_id)
    now = now_for(uow.session, sub.test_clock_id)
    sub.paused_at = None
    sub.billing_anchor = sub.current_period_start = now
    sub.current_period_end = _period_end(plan, now)
    outbox.record_subscription(uow.session, "subscription.resumed", sub)
    billed = _cycle_payment(uow.session, sub.id, now)
    if billed is None:
        _charge_now(uow, sub, plan, now)
    else:  # resumed at the very instant a billed period began (a test clock): bill it once
        _recharge(uow, sub, billed)
    billing_cycle.schedule(sub)
    return sub


def change_plan(
    uow: UnitOfWork,
    scope: Scope,
    sub_id: str,
    *,
    plan_id: str,
    proration_behavior: Proration,
) -> Subscription:
    """Switch plans at once; prorate the rest of the current period if asked.

    The billing anchor stays, unless the new plan bills another interval: then its periods
    start where the current one ends (a yearly plan's first year is a whole year).
    """
    session = uow.session
    sub = scope.get(session, Subscription, sub_id, lock=True)
    _check(sub.status, Event.CHANGE_PLAN)
    new = _active_plan(session, scope, plan_id)
    old = session.get_one(Plan, sub.plan_id)
    if new.currency != old.currency:
        raise Invalid(
            "plan_id",
            "The new plan must be in the subscription's currency.",
            code="currency_mismatch",
        )
    sub.plan_id = new.id
    now = now_for(session, sub.test_clock_id)
    start, end = sub.current_period_start, sub.current_period_end
    same_cycle = (new.interval, new.interval_count) == (old.interval, old.interval_count)
    if not same_cycle:
        # The old anchor's grid does not fit the new interval: the current period still
        # ends when it did, and the new plan's full periods follow from there.
        sub.billing_anchor = end
    if proration_behavior == "create_prorations" and sub.status is not Status.TRIALING:
        at = min(max(now, start), end)
        change = proration.change_plan(
            old.amount, new.amount, start, end, at,
            new_period_end=None if same_cycle else _period_end(new, start),
        )
        sub.credit_balance += change.credit
        if change.charge:
            payment = billing_cycle.subscription_payment(
                uow, sub, change.charge, new.currency, PaymentPurpose.PRORATION,
                description=f"Proration: {old.code} -> {new.code}",
            )
            uow.enqueue("charge_payment", payment.id)
    outbox.record_subscription(session, "subscription.plan_changed", sub)
    billing_cycle.schedule(sub)
    return sub


def _charge_now(uow: UnitOfWork, sub: Subscription, plan: Plan, start: datetime) -> None:
    payment = billing_cycle.charge_period(uow, sub, plan, start)
    if payment is not None:
        uow.enqueue("charge_payment", payment.id)


def _cycle_payment(session: Session, sub_id: str, start: datetime) -> Payment | None:
    """The subscription's payment of the period starting at `start`, locked (after the
    subscription, which the caller locked), if there is one."""
    payment_id = session.scalar(
        select(Payment.id).where(
            Payment.subscription_id == sub_id,
            Payment.purpose == PaymentPurpose.CYCLE,
            Payment.period_start == start,
        )
    )
    return locks.lock(session, payment_ids=[payment_id]).payments[payment_id] if payment_id \
        else None


def _recharge(uow: UnitOfWork, sub: Subscription, payment: Payment) -> None:
    """Make `payment` the subscription's current one; charge it again if it had failed."""
    sub.latest_payment_id = payment.id
    if payment.status is PaymentStatus.FAILED:
        payment.status = PaymentStatus.PENDING
        uow.enqueue("charge_payment", payment.id)


def _period_end(plan: Plan, anchor: datetime) -> datetime:
    return periods.add_intervals(anchor, plan.interval, plan.interval_count, 1)


def _active_plan(session: Session, scope: Scope, plan_id: str) -> Plan:
    plan = scope.get(session, Plan, plan_id)
    if plan.archived_at is not None:
        raise Invalid("plan_id", "This plan is archived.", code="plan_archived")
    return plan


def _check(status: Status, event: Event) -> Status:
    try:
        return move(status, event)
    except InvalidTransition as exc:
        raise Conflict(str(exc), code=exc.code) from None
