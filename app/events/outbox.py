"""Writes events into the outbox inside the caller's transaction.

`record` renders the event at once (the object as it is now) and keeps the row on the
session; every row the transaction recorded is inserted in one statement just before it
commits (`UnitOfWork.flush` takes them), in the order recorded, and dropped if it rolls
back. (An ORM object per event, flushed one by one, was a third of a renewal's CPU in
bench/renewals.py.)
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, inspect
from sqlalchemy.orm import Session

from app import render
from app.clock import utcnow
from app.ids import new_id
from app.models import Customer, OutboxEvent, Payment, PaymentMethod, Subscription
from app.render import timestamp

SCHEMA_VERSION = 1
#: The topic of each kind of event (the part of its type before the dot).
TOPICS = {
    "payment": "billing.payments",
    "subscription": "billing.subscriptions",
    "customer": "billing.customers",
    "payment_method": "billing.customers",
}
#: Every event type of the contract (API.md, Events), e.g. for webhook endpoints' filters.
EVENT_TYPES = frozenset(
    [f"payment.{t}" for t in ("created", "succeeded", "failed", "requires_action", "refunded")]
    + [f"subscription.{t}" for t in ("created", "activated", "renewed", "past_due", "paused",
                                     "resumed", "plan_changed", "updated", "canceled",
                                     "trial_will_end")]
    + ["customer.updated", "customer.deleted", "payment_method.detached"]
)


def record(
    session: Session,
    event_type: str,
    obj: dict[str, Any],
    *,
    tenant_id: str,
    livemode: bool,
    key: str | None = None,
) -> str:
    """Add the event `event_type` (e.g. "payment.succeeded") about `obj`; returns its id.

    Kafka's key is `key`, by default the object's id.
    """
    kind = event_type.split(".", 1)[0]
    event_id = new_id("evt")
    now = utcnow()
    payload = {
        "id": event_id,
        "type": event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": timestamp(now),
        "tenant_id": tenant_id,
        "livemode": livemode,
        "data": {"object": obj},
    }
    session.info.setdefault(_PENDING, []).append({
        "event_id": event_id, "topic": TOPICS[kind],
        "key": key or obj["id"], "type": event_type,
        "payload": payload, "created_at": now,
    })
    return event_id


_PENDING = "outbox_pending"
TABLE = cast(Table, OutboxEvent.__table__)


def take(session: Session) -> list[dict[str, Any]]:
    """The rows of the events recorded so far, forgotten here: UnitOfWork.flush inserts
    them just before committing, or drops them when the transaction rolls back."""
    rows: list[dict[str, Any]] = session.info.pop(_PENDING, [])
    return rows


def record_payment(session: Session, event_type: str, payment: Payment) -> str:
    """Add a `payment.*` event carrying the payment as the API shows it once this commits."""
    if inspect(payment).persistent:
        # Set now what the flush's onupdate would set later, so the event shows it too.
        payment.updated_at = utcnow()
    return record(
        session,
        event_type,
        render.payment(payment),
        tenant_id=payment.tenant_id,
        livemode=payment.livemode,
    )


def record_subscription(
    session: Session, event_type: str, subscription: Subscription
) -> str:
    """Add a `subscription.*` event carrying the subscription as the API shows it now."""
    return record(
        session, event_type, render.subscription(subscription),
        tenant_id=subscription.tenant_id, livemode=subscription.livemode,
    )


def record_customer(session: Session, event_type: str, customer: Customer) -> str:
    """Add a `customer.*` event carrying the customer as the API shows it now."""
    return record(
        session, event_type, render.customer(customer),
        tenant_id=customer.tenant_id, livemode=customer.livemode,
    )


def record_payment_method(session: Session, event_type: str, method: PaymentMethod) -> str:
    """Add a `payment_method.*` event, keyed by its customer (topic billing.customers)."""
    return record(
        session, event_type, render.payment_method(method),
        tenant_id=method.tenant_id, livemode=method.livemode, key=method.customer_id,
    )
