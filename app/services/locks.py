"""The one lock order of the money paths: subscriptions, then payments, each in id order.

A transaction that changes payments and their subscriptions together locks them through
`lock`, subscriptions first (in one call, or in an earlier one), so two transactions never
wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from app.models import Payment, Subscription


@dataclass(frozen=True)
class Locked:
    """The rows `lock` locked, by id; holding it keeps them in the session's identity map."""

    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    payments: dict[str, Payment] = field(default_factory=dict)


def lock(session: Session, *, subscription_ids: Iterable[str | None] = (),
         payment_ids: Iterable[str] = ()) -> Locked:
    """Lock these subscriptions, then these payments (with their attempts, read afresh in
    the same round trip)."""
    subs = sorted({i for i in subscription_ids if i is not None})
    pays = sorted(set(payment_ids))
    subscriptions = {s.id: s for s in session.scalars(
        select(Subscription).where(Subscription.id.in_(subs)).order_by(Subscription.id)
        .with_for_update())} if subs else {}
    payments = {p.id: p for p in session.scalars(
        select(Payment).where(Payment.id.in_(pays)).order_by(Payment.id)
        .with_for_update(of=Payment).options(joinedload(Payment.attempts))
        .execution_options(populate_existing=True)
    ).unique()} if pays else {}
    return Locked(subscriptions, payments)
