"""What a mail needs beyond its event, read from the database when the mail is sent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app.billing.money import format_amount
from app.mail.message import MailContext
from app.models import Customer, Plan, Subscription, Tenant


def load(session: Session, event: dict[str, Any]) -> MailContext | None:
    """The recipient and names for `event`, or None when the customer has no email address."""
    obj = event["data"]["object"]
    customer = session.get(Customer, obj["customer_id"])
    if customer is None or not customer.email:
        return None
    tenant = session.get(Tenant, event["tenant_id"])
    plan = session.get(Plan, obj["plan_id"]) if obj.get("plan_id") else None
    return MailContext(
        recipient=customer.email,
        customer_name=customer.name,
        merchant_name=tenant.name if tenant is not None else "your merchant",
        plan_name=plan.name if plan is not None else None,
        plan_amount=_plan_price(plan) if plan is not None else None,
        next_retry_at=next_retry_at(session, obj) if event["type"] == "payment.failed" else None,
    )


def next_retry_at(session: Session, payment: dict[str, Any]) -> datetime | None:
    """When dunning will try a failed payment again, or None when it will not.

    The hook for the "payment failed" mail: a `next_retry_at` (RFC 3339) carried by the
    event's payment object wins, as a snapshot of the decision; otherwise the payment's
    subscription, while `past_due`, has its next retry in `retry_at`.
    """
    carried = payment.get("next_retry_at")
    if carried:
        return datetime.fromisoformat(str(carried).replace("Z", "+00:00"))
    if not payment.get("subscription_id"):
        return None
    subscription = session.get(Subscription, payment["subscription_id"])
    if subscription is None or subscription.status.value != "past_due":
        return None
    return subscription.retry_at


def _plan_price(plan: Plan) -> str:
    every = plan.interval if plan.interval_count == 1 else f"{plan.interval_count} {plan.interval}s"
    return f"{format_amount(plan.amount, plan.currency)} every {every}"
