"""Writes events into the outbox inside the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import Session

from app import render
from app.clock import utcnow
from app.ids import new_id
from app.models import OutboxEvent, Payment, Subscription
from app.render import timestamp

SCHEMA_VERSION = 1
TOPICS = {"payment": "billing.payments", "subscription": "billing.subscriptions"}


def record(
    session: Session, event_type: str, obj: dict[str, Any], *, tenant_id: str, livemode: bool
) -> OutboxEvent:
    """Add the event `event_type` (e.g. "payment.succeeded") about `obj` to the outbox."""
    kind = event_type.split(".", 1)[0]
    event_id = new_id("evt")
    payload = {
        "id": event_id,
        "type": event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": timestamp(utcnow()),
        "tenant_id": tenant_id,
        "livemode": livemode,
        "data": {"object": obj},
    }
    event = OutboxEvent(
        event_id=event_id, topic=TOPICS[kind], key=obj["id"], type=event_type, payload=payload
    )
    session.add(event)
    return event


def record_payment(session: Session, event_type: str, payment: Payment) -> OutboxEvent:
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
) -> OutboxEvent:
    """Add a `subscription.*` event carrying the subscription as the API shows it now."""
    return record(
        session, event_type, render.subscription(subscription),
        tenant_id=subscription.tenant_id, livemode=subscription.livemode,
    )
