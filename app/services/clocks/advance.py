"""The test-clock driver: an advance runs everything due on the clock, in time order.

`advance_clock` is what the `advance_test_clock` actor runs (on the `clocks` queue, while
it holds the clock's `driving` locks): each instant's due subscriptions are renewed together
by `renewals.run_due`, and their payments settled before time moves on.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select

from app.models import ClockStatus, Payment, PaymentStatus, Subscription, TestClock
from app.models.uow import UnitOfWorkFactory
from app.providers.registry import ProviderRegistry
from app.services import charge, reconcile
from app.services.renewals import MAX_STEPS, run_due

log = logging.getLogger(__name__)
UNSETTLED_POLL_SECONDS = 0.05
#: Subscriptions of a test clock due at the same instant, done in one round together.
ADVANCE_BATCH = 100


def advance_clock(
    uows: UnitOfWorkFactory,
    providers: ProviderRegistry,
    clock_id: str,
    *,
    lease_seconds: int,
    retry: charge.RetryPolicy,
) -> int:
    """Run everything due on a test clock up to its frozen time, globally in time order.

    The clock turns ready only once every payment of its subscriptions is settled (or waits
    on the customer): transient provider errors are retried here, up to the policy's limit,
    then the payment fails as it would in real time, and `unknown` ones are reconciled.
    """
    with uows() as uow:
        clock = uow.session.get_one(TestClock, clock_id)
        until = clock.frozen_time
    settler = _Settler(uows, providers, clock_id, lease_seconds, retry)
    steps = 0
    settler.settle_all()
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
            if settler.settle_all():
                continue
            break
        ran = run_due(uows, providers, sub_ids, until, lease_seconds=lease_seconds,
                      max_rounds=1)
        if ran.to_retry:  # settled (retried, or failed into dunning) before time moves on
            settler.failed(ran.to_retry)
            settler.settle_all()
        steps += len(sub_ids)
    with uows() as uow:
        clock = uow.session.get_one(TestClock, clock_id, with_for_update=True)
        if clock.frozen_time == until:
            clock.status = ClockStatus.READY
        uow.commit()
    log.info("test clock advanced", extra={"clock_id": clock_id, "steps": steps})
    return steps


@dataclass
class _Settler:
    """Settles a clock's unsettled subscription payments before its time moves on.

    A first, resume or proration payment is charged by its own message, which may not have
    run yet when the clock advances; its outcome moves the subscription, so the clock charges
    it here. One that another worker is charging right now is waited for (its lease bounds
    it). Transient failures are counted per payment for this advance.
    """

    uows: UnitOfWorkFactory
    providers: ProviderRegistry
    clock_id: str
    lease_seconds: int
    retry: charge.RetryPolicy
    transient: Counter[str] = field(default_factory=Counter)

    def failed(self, payment_ids: Sequence[str]) -> None:
        self.transient.update(payment_ids)

    def settle_all(self) -> bool:
        """Settle every open payment of the clock; False if there was none."""
        found = False
        while rows := self._unsettled():
            found = True
            if waited := max(self.transient[pid] for pid, _ in rows):
                time.sleep(self.retry.backoff_seconds(waited))
            due = []
            for payment_id, status in rows:
                if status is PaymentStatus.UNKNOWN:
                    reconcile.reconcile_payment(self.uows, self.providers, payment_id)
                elif self.transient[payment_id] > self.retry.max_retries:
                    charge.give_up(self.uows, payment_id)
                else:
                    due.append(payment_id)
            if due:
                retry = charge.charge_payments(self.uows, self.providers, due,
                                               lease_seconds=self.lease_seconds)
                self.failed([outcome.payment_id for outcome in retry])
            after = self._unsettled()
            self.failed([pid for pid, status in after if status is PaymentStatus.UNKNOWN])
            if after == rows:
                time.sleep(UNSETTLED_POLL_SECONDS)  # another worker holds them: wait its lease
        return found

    def _unsettled(self) -> list[tuple[str, PaymentStatus]]:
        with self.uows() as uow:
            return [
                (row.id, row.status)
                for row in uow.session.execute(
                    select(Payment.id, Payment.status)
                    .join(Subscription, Payment.subscription_id == Subscription.id)
                    .where(
                        Subscription.test_clock_id == self.clock_id,
                        Payment.status.in_(
                            (PaymentStatus.PENDING, PaymentStatus.PROCESSING,
                             PaymentStatus.UNKNOWN)
                        ),
                    )
                    .order_by(Payment.id)
                )
            ]
