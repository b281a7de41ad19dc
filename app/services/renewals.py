"""Running what fell due: by the scheduler in real time, or by a test clock's advance.

Each round locks a batch of subscriptions, does each one's next due thing at its due time,
claims the payments that created and commits; they are charged right there, together (in
the same worker, no extra message), and each payment's outcome moves its subscription
(billing_cycle.on_payment_settled).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from app.clock import utcnow
from app.models import Payment, PaymentStatus, Plan, Subscription
from app.models.uow import UnitOfWork, UnitOfWorkFactory
from app.providers.registry import ProviderRegistry
from app.services import billing_cycle, charge
from app.telemetry import metrics

log = logging.getLogger(__name__)
MAX_STEPS = 100_000  # a runaway loop is a bug; stop it loudly


@dataclass(frozen=True)
class Ran:
    """What `run_due` did: due steps taken, payments a transient error left to retry, and
    subscriptions it skipped because another transaction held them."""

    steps: int
    to_retry: list[str]
    skipped: list[str]


def run_due(
    uows: UnitOfWorkFactory,
    providers: ProviderRegistry,
    sub_ids: Sequence[str],
    until: datetime,
    *,
    lease_seconds: int,
    max_rounds: int = MAX_STEPS,
) -> Ran:
    """Do everything due by `until` for these subscriptions, one due thing each per round.

    Each round locks the subscriptions that are not locked elsewhere (SKIP LOCKED: another
    worker already has them), does their next due thing and claims the payments that
    created in one transaction, then charges them, together. A payment whose provider
    failed transiently stays `processing` and is returned for the caller to retry.
    """
    pending, steps, to_retry, skipped = list(sub_ids), 0, [], []
    for number in range(max_rounds):
        if not pending:
            break
        pending, claims, voids, locked = _round(uows, pending, until, lease_seconds,
                                                again=number > 0)
        if number == 0:
            skipped = [sub_id for sub_id in sub_ids if sub_id not in locked]
        if claims:
            to_retry += [o.payment_id for o in charge.charge_claimed(uows, providers, claims)]
        if voids:
            charge.void_claimed(uows, providers, voids)
        steps += len(pending)
    if pending and max_rounds == MAX_STEPS:
        raise RuntimeError(f"more than {MAX_STEPS} due steps for {pending[:5]}")
    return Ran(steps, to_retry, skipped)


def _round(
    uows: UnitOfWorkFactory,
    sub_ids: Sequence[str],
    until: datetime,
    lease_seconds: int,
    *,
    again: bool,
) -> tuple[list[str], list[charge.Claim], list[charge.Claim], set[str]]:
    """Lock what is free of `sub_ids`, do each one's next due thing, claim the payments;
    returns the subscriptions that acted, the claims to charge, those to stop at their
    provider (expiries), and every subscription locked."""
    acted: list[str] = []
    renewed = 0
    payments: list[Payment] = []
    waiting: list[Payment] = []
    query = select(Subscription).where(Subscription.id.in_(sub_ids))
    if again:
        # Our last round (or its payments' outcomes) scheduled them: only those still due
        # (catching up on missed periods) are locked and read again, not all of them; the
        # first round cannot filter, the scheduler's claim pushed next_event_at a lease ahead.
        query = query.where(Subscription.next_event_at <= until)
    with uows() as uow:
        subs = uow.session.scalars(
            query.order_by(Subscription.id).with_for_update(skip_locked=True)
        ).all()
        _held = list(  # in the session's identity map for apply_due, without a query each
            uow.session.scalars(select(Plan).where(Plan.id.in_({s.plan_id for s in subs})))
        ) if subs else []
        for sub in subs:
            due = billing_cycle.next_due(sub)
            if due is None or due.at > until:
                billing_cycle.schedule(sub)
                continue
            payment = billing_cycle.apply_due(uow, sub, due)
            acted.append(sub.id)
            if due.kind == "renew":
                renewed += 1
            if payment is not None and payment.status is PaymentStatus.REQUIRES_ACTION:
                # Back here after a lease if stopping it never settles (a crash, an outage).
                sub.next_event_at = utcnow() + timedelta(seconds=lease_seconds)
                waiting.append(payment)
            elif payment is not None:
                payments.append(payment)
        claims = charge.claim_held(uow, payments, lease_seconds)
        voids = charge.waiting_claims(uow.session, waiting)
        uow.commit()
    if renewed:
        metrics.count("RenewalsDone", renewed)
    return acted, claims, voids, {sub.id for sub in subs}


def due_backlog(uow: UnitOfWork) -> tuple[int, float]:
    """Real-time subscriptions due and not claimed yet, and how many seconds the oldest of
    them is behind its schedule (0 when none is)."""
    count, lag = uow.session.execute(
        select(func.count(), func.coalesce(
            func.extract("epoch", func.now() - func.min(Subscription.next_event_at)), 0))
        .where(Subscription.test_clock_id.is_(None), Subscription.next_event_at <= func.now())
    ).one()
    return int(count), float(lag)


def claim_due(uow: UnitOfWork, *, batch: int, message_size: int, lease_seconds: int) -> int:
    """Claim real-time subscriptions that are due and enqueue each after commit.

    SKIP LOCKED splits the rows between schedulers; pushing `next_event_at` a lease ahead
    keeps them from being claimed again while a worker runs them, and brings them back
    if that worker dies.
    """
    now = utcnow()
    due = (
        select(Subscription.id)
        .where(Subscription.test_clock_id.is_(None), Subscription.next_event_at <= now)
        .order_by(Subscription.next_event_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    # One statement, claim and update (WITH ... UPDATE ... RETURNING): no round trip and no
    # list of a batch of ids sent back to be parsed again (bench/renewals.py: the scanner).
    ids = list(
        uow.session.scalars(
            update(Subscription)
            .where(Subscription.id == due.c.id)
            .values(next_event_at=now + timedelta(seconds=lease_seconds))
            .returning(Subscription.id)
            .execution_options(synchronize_session=False)
        )
    )
    for start in range(0, len(ids), message_size):
        chunk = ids[start : start + message_size]
        uow.enqueue("process_subscriptions", chunk)
    return len(ids)
