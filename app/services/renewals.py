"""Running what fell due: by the scheduler in real time, or by a test clock's advance.

Each step locks the subscription, does one due thing at its due time and commits; a
payment it created is charged right there (in the same worker, no extra message), and
the payment's outcome moves the subscription (billing_cycle.on_payment_settled).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import select, update

from app.clock import utcnow
from app.models import ClockStatus, Subscription, TestClock
from app.models.uow import UnitOfWork, UnitOfWorkFactory
from app.providers.registry import ProviderRegistry
from app.services import billing_cycle, charge

log = logging.getLogger(__name__)
Enqueue = Callable[..., None]
MAX_STEPS = 100_000  # a runaway loop is a bug; stop it loudly


def step(
    uows: UnitOfWorkFactory,
    providers: ProviderRegistry,
    sub_id: str,
    until: datetime,
    *,
    lease_seconds: int,
) -> bool:
    """Do the subscription's next due thing if it is due by `until`; False when nothing is."""
    with uows() as uow:
        sub = uow.session.get(Subscription, sub_id, with_for_update=True)
        if sub is None:
            return False
        due = billing_cycle.next_due(sub)
        if due is None or due.at > until:
            billing_cycle.schedule(sub)
            uow.commit()
            return False
        payment = billing_cycle.apply_due(uow.session, sub, due)
        payment_id = payment.id if payment else None
        uow.commit()
    if payment_id is not None:
        charge.charge_payment(uows, providers, payment_id, lease_seconds=lease_seconds)
    return True


def run_due(
    uows: UnitOfWorkFactory,
    providers: ProviderRegistry,
    sub_id: str,
    until: datetime,
    *,
    lease_seconds: int,
) -> int:
    """Do everything due for one subscription by `until`, in time order; returns the count."""
    for done in range(MAX_STEPS):
        if not step(uows, providers, sub_id, until, lease_seconds=lease_seconds):
            return done
    raise RuntimeError(f"{sub_id}: more than {MAX_STEPS} due steps")


def claim_due(uow: UnitOfWork, enqueue: Enqueue, *, batch: int, lease_seconds: int) -> int:
    """Claim real-time subscriptions that are due and enqueue each after commit.

    SKIP LOCKED splits the rows between schedulers; pushing `next_event_at` a lease ahead
    keeps them from being claimed again while a worker runs them, and brings them back
    if that worker dies.
    """
    now = utcnow()
    ids = list(
        uow.session.scalars(
            select(Subscription.id)
            .where(Subscription.test_clock_id.is_(None), Subscription.next_event_at <= now)
            .order_by(Subscription.next_event_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        uow.session.execute(
            update(Subscription)
            .where(Subscription.id.in_(ids))
            .values(next_event_at=now + timedelta(seconds=lease_seconds))
        )
    for sub_id in ids:
        uow.after_commit(partial(enqueue, "process_subscription", sub_id))
    uow.commit()
    return len(ids)


def advance_clock(
    uows: UnitOfWorkFactory, providers: ProviderRegistry, clock_id: str, *, lease_seconds: int
) -> int:
    """Run everything due on a test clock up to its frozen time, globally in time order."""
    with uows() as uow:
        clock = uow.session.get_one(TestClock, clock_id)
        until = clock.frozen_time
    steps = 0
    while steps < MAX_STEPS:
        with uows() as uow:
            sub_id = uow.session.scalar(
                select(Subscription.id)
                .where(Subscription.test_clock_id == clock_id, Subscription.next_event_at <= until)
                .order_by(Subscription.next_event_at, Subscription.id)
                .limit(1)
            )
        if sub_id is None:
            break
        step(uows, providers, sub_id, until, lease_seconds=lease_seconds)
        steps += 1
    with uows() as uow:
        clock = uow.session.get_one(TestClock, clock_id, with_for_update=True)
        if clock.frozen_time == until:
            clock.status = ClockStatus.READY
        uow.commit()
    log.info("test clock advanced", extra={"clock_id": clock_id, "steps": steps})
    return steps
