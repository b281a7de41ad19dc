"""The public JSON shape of every object, shared by the API and by events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.models import (
    Customer,
    Payment,
    PaymentMethod,
    Plan,
    Refund,
    SandboxCharge,
    Subscription,
    TestClock,
    WebhookDelivery,
    WebhookEndpoint,
)

Json = dict[str, Any]


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, to the second."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat is half the CPU of strftime, and an event renders a dozen timestamps.
    return value.isoformat(timespec="seconds")[:19] + "Z"


def customer(c: Customer) -> Json:
    return {
        "id": c.id,
        "object": "customer",
        "email": c.email,
        "name": c.name,
        "metadata": c.metadata_,
        "test_clock_id": c.test_clock_id,
        "livemode": c.livemode,
        "created_at": timestamp(c.created_at),
    }


def deleted(obj: Customer | PaymentMethod) -> Json:
    """What a DELETE answers: the id, the kind and `deleted: true`."""
    return {"id": obj.id, "object": "customer" if isinstance(obj, Customer) else "payment_method",
            "deleted": True}


def payment_method(m: PaymentMethod) -> Json:
    return {
        "id": m.id,
        "object": "payment_method",
        "customer_id": m.customer_id,
        "provider": m.provider.value,
        "brand": m.brand,
        "last4": m.last4,
        "created_at": timestamp(m.created_at),
    }


def payment(p: Payment) -> Json:
    return {
        "id": p.id,
        "object": "payment",
        "amount": p.amount,
        "currency": p.currency,
        "customer_id": p.customer_id,
        "payment_method_id": p.payment_method_id,
        "subscription_id": p.subscription_id,
        "status": p.status.value,
        "failure_code": p.failure_code,
        "failure_message": p.failure_message,
        "amount_refunded": p.amount_refunded,
        "attempts": [
            {
                "number": a.number,
                "status": a.status.value,
                "provider": a.provider,
                "failure_code": a.failure_code,
                "created_at": timestamp(a.created_at),
            }
            for a in p.attempts
        ],
        "description": p.description,
        "livemode": p.livemode,
        "created_at": timestamp(p.created_at),
        "updated_at": timestamp(p.updated_at),
        "metadata": p.metadata_,
        "next_action": p.next_action,
    }


def refund(r: Refund) -> Json:
    return {
        "id": r.id,
        "object": "refund",
        "payment_id": r.payment_id,
        "amount": r.amount,
        "status": r.status.value,
        "created_at": timestamp(r.created_at),
    }


def plan(p: Plan) -> Json:
    return {
        "id": p.id,
        "object": "plan",
        "code": p.code,
        "name": p.name,
        "amount": p.amount,
        "currency": p.currency,
        "interval": p.interval,
        "interval_count": p.interval_count,
        "trial_days": p.trial_days,
        "archived": p.archived_at is not None,
        "livemode": p.livemode,
        "created_at": timestamp(p.created_at),
    }


def subscription(s: Subscription) -> Json:
    return {
        "id": s.id,
        "object": "subscription",
        "customer_id": s.customer_id,
        "plan_id": s.plan_id,
        "payment_method_id": s.payment_method_id,
        "status": s.status.value,
        "current_period_start": timestamp(s.current_period_start),
        "current_period_end": timestamp(s.current_period_end),
        "billing_anchor": timestamp(s.billing_anchor),
        "trial_end": timestamp(s.trial_end),
        "cancel_at_period_end": s.cancel_at_period_end,
        "canceled_at": timestamp(s.canceled_at),
        "cancellation_reason": s.cancellation_reason,
        "paused_at": timestamp(s.paused_at),
        "latest_payment_id": s.latest_payment_id,
        "credit_balance": s.credit_balance,
        "test_clock_id": s.test_clock_id,
        "livemode": s.livemode,
        "created_at": timestamp(s.created_at),
        "metadata": s.metadata_,
    }


def test_clock(c: TestClock) -> Json:
    return {
        "id": c.id,
        "object": "test_clock",
        "frozen_time": timestamp(c.frozen_time),
        "status": c.status.value,
        "livemode": c.livemode,
        "created_at": timestamp(c.created_at),
    }


def sandbox_charge(c: SandboxCharge) -> Json:
    return {
        "id": c.id,
        "payment_id": c.payment_id,
        "idempotency_key": c.idempotency_key,
        "amount": c.amount,
        "currency": c.currency,
        "created_at": timestamp(c.created_at),
    }


def webhook_endpoint(e: WebhookEndpoint) -> Json:
    return {
        "id": e.id,
        "object": "webhook_endpoint",
        "url": e.url,
        "event_types": list(e.event_types),
        "description": e.description,
        "status": "enabled",
        "livemode": e.livemode,
        "created_at": timestamp(e.created_at),
    }


def webhook_delivery(d: WebhookDelivery) -> Json:
    return {
        "id": d.id,
        "object": "webhook_delivery",
        "event_id": d.event_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "last_status_code": d.last_status_code,
        "next_attempt_at": timestamp(d.next_attempt_at),
        "created_at": timestamp(d.created_at),
    }
