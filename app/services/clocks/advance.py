"""The test-clock driver: an advance runs everything due on the clock, in time order.

`advance_clock` is what the `advance_test_clock` actor runs (on the `clocks` queue, while
it holds the clock's `driving` locks): each instant's due subscriptions are renewed together
by `renewals.run_due`, and their payments settled before time moves on. A payment that is
not settled yet stops the advance, which the actor runs again later: it goes on from where
it stopped. After a transient failure (ClockUnsettled) that is a retry of Dramatiq's
Retries, the actors' one retry policy; while the clock only waits for payments other workers
are charging (ClockWaiting) it is a new message soon, drawing on no retry.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from app.clock import utcnow
from app.models import ClockStatus, Payment, PaymentStatus, Subscription, TestClock
from app.models.uow import UnitOfWorkFactory
from app.providers.registry import ProviderRegistry
from app.services import charge, reconcile
from app.services.renewals import MAX_STEPS, run_due

log = logging.getLogger(__name__)
#: Subscriptions of a test clock due at the same instant, done in one round together.
ADVANCE_BATCH = 100
_OPEN = (PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN)


class ClockUnsettled(Exception):
    """Raised when payments of a test clock are not settled yet (a transient provider error,
    a lost answer not reconciled yet), so its time cannot move on: the advance is a
    transient failure, retried with the actors' backoff."""


class ClockWaiting(Exception):
    """Raised when the only open payments of a test clock are ones other workers are
    charging right now (their leases are held): nothing failed, the clock waits for them
    (their leases bound the wait) and looks again soon."""


def advance_clock(
    uows: UnitOfWorkFactory, providers: ProviderRegistry, clock_id: str, *, lease_seconds: int
) -> int:
    """Run everything due on a test clock up to its frozen time, globally in time order.

    The clock turns ready only once every payment of its subscriptions is settled (or waits
    on the customer): each run charges the open ones once and reconciles the `unknown` ones,
    and raises ClockUnsettled while any stays open, or ClockWaiting when each that does is
    being charged by another worker; when the retries run out, `give_up` fails them as real
    time would.
    """
    with uows() as uow:
        clock = uow.session.get_one(TestClock, clock_id)
        until = clock.frozen_time
    steps = 0
    _settle(uows, providers, clock_id, lease_seconds)
    on_clock = Subscription.test_clock_id == clock_id
    earliest = (
        select(Subscription.next_event_at)
        .where(on_clock, Subscription.next_event_at <= until)
        .order_by(Subscription.next_event_at)
        .limit(1)
        .scalar_subquery()
    )
    while steps < MAX_STEPS:
        with uows() as uow:  # all that falls due at the earliest time, done together
            sub_ids = list(uow.session.scalars(
                select(Subscription.id)
                .where(on_clock, Subscription.next_event_at == earliest)
                .order_by(Subscription.id)
                .limit(ADVANCE_BATCH)
            ))
        if not sub_ids:
            if _settle(uows, providers, clock_id, lease_seconds):
                continue
            break
        ran = run_due(uows, providers, sub_ids, until, lease_seconds=lease_seconds,
                      max_rounds=1)
        if ran.to_retry:  # settled (retried, or failed into dunning) before time moves on
            raise ClockUnsettled(f"{len(ran.to_retry)} payments failed for now")
        steps += len(sub_ids)
    with uows() as uow:
        clock = uow.session.get_one(TestClock, clock_id, with_for_update=True)
        if clock.frozen_time == until:
            clock.status = ClockStatus.READY
        uow.commit()
    log.info("test clock advanced", extra={"clock_id": clock_id, "steps": steps})
    return steps


def give_up(uows: UnitOfWorkFactory, clock_id: str) -> None:
    """Settle the clock's payments whose retries ran out, as a payment's own message does
    then (`charge.give_up`): failed if nothing can have been charged, else unknown."""
    for payment_id, status, _ in _unsettled(uows, clock_id):
        if status is PaymentStatus.PROCESSING:
            charge.give_up(uows, payment_id)


def _settle(
    uows: UnitOfWorkFactory, providers: ProviderRegistry, clock_id: str, lease_seconds: int
) -> bool:
    """Settle every open payment of the clock once; False if there was none.

    A first, resume or proration payment is charged by its own message, which may not have
    run yet when the clock advances; its outcome moves the subscription, so the clock charges
    it here. One another worker is charging right now is left to it (its lease bounds it).
    ClockWaiting if only such ones stay open, ClockUnsettled if any other one does.
    """
    rows = _unsettled(uows, clock_id)
    if not rows:
        return False
    due = []
    for payment_id, status, elsewhere in rows:
        if status is PaymentStatus.UNKNOWN:
            reconcile.reconcile_payment(uows, providers, payment_id)
        elif not elsewhere:
            due.append(payment_id)
    if due:
        charge.charge_payments(uows, providers, due, lease_seconds=lease_seconds)
    if left := _unsettled(uows, clock_id):
        if all(elsewhere for _, _, elsewhere in left):
            raise ClockWaiting(f"{len(left)} payments of the clock are being charged elsewhere")
        raise ClockUnsettled(f"{len(left)} payments of the clock are not settled yet")
    return True


def _unsettled(uows: UnitOfWorkFactory, clock_id: str) -> list[tuple[str, PaymentStatus, bool]]:
    """The clock's open payments: id, status, and whether another worker is charging it now
    (its lease has an owner and has not lapsed; a Retry-After's hold has no owner)."""
    now = utcnow()
    with uows() as uow:
        return [
            (row.id, row.status, row.lease_owner is not None and row.lease_until is not None
             and row.lease_until > now)
            for row in uow.session.execute(
                select(Payment.id, Payment.status, Payment.lease_owner, Payment.lease_until)
                .join(Subscription, Payment.subscription_id == Subscription.id)
                .where(Subscription.test_clock_id == clock_id, Payment.status.in_(_OPEN))
                .order_by(Payment.id)
            )
        ]
