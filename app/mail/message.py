"""Building a customer mail from an event: pure, no database, no SMTP.

Which event sends which mail (its *kind*), the subject, and both bodies rendered from the
Jinja templates in `app/mail/templates/<kind>.txt` and `.html`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from app.billing.money import format_amount

#: The mail kind of each mail-worthy event type (see app.models.outbox.MAIL_EVENT_TYPES).
KIND_BY_TYPE = {
    "payment.succeeded": "receipt",
    "payment.failed": "payment_failed",
    "subscription.trial_will_end": "trial_ending",
    "subscription.canceled": "subscription_canceled",
}

SUBJECTS = {
    "receipt": "Receipt for your payment of {amount}",
    "payment_failed": "Your payment of {amount} failed",
    "trial_ending": "Your trial of {plan} ends on {date}",
    "subscription_canceled": "Your subscription to {plan} has been canceled",
}

FAILURE_REASONS = {
    "card_declined": "your card was declined",
    "insufficient_funds": "your card has insufficient funds",
    "provider_unavailable": "the payment provider could not be reached",
}


@dataclass(frozen=True)
class MailContext:
    """What the templates need beyond the event: looked up in the database at send time."""

    recipient: str
    customer_name: str | None
    merchant_name: str
    plan_name: str | None = None
    plan_amount: str | None = None
    next_retry_at: datetime | None = None


@dataclass(frozen=True)
class Email:
    kind: str
    recipient: str
    subject: str
    text: str
    html: str
    headers: dict[str, str] = field(default_factory=dict)


_env = Environment(
    loader=PackageLoader("app.mail", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def kind_of(event_type: str) -> str | None:
    """The mail kind an event type sends, or None when it sends no mail."""
    return KIND_BY_TYPE.get(event_type)


def message_id(event_id: str, kind: str, domain: str) -> str:
    """A Message-ID derived from the dedupe key: a resend is recognisable as the same mail."""
    return f"<{event_id}.{kind}@{domain}>"


def build(event: dict[str, Any], context: MailContext) -> Email:
    """The mail that `event` (an outbox payload) sends to `context.recipient`."""
    kind = KIND_BY_TYPE[event["type"]]
    values = _values(event, context)
    subject = SUBJECTS[kind].format(**values)
    return Email(
        kind=kind,
        recipient=context.recipient,
        subject=subject,
        text=_env.get_template(f"{kind}.txt").render(subject=subject, **values),
        html=_env.get_template(f"{kind}.html").render(subject=subject, **values),
    )


def _values(event: dict[str, Any], context: MailContext) -> dict[str, Any]:
    obj = event["data"]["object"]
    amount = format_amount(obj["amount"], obj["currency"]) if "amount" in obj else None
    reason = obj.get("failure_message") or FAILURE_REASONS.get(obj.get("failure_code") or "")
    return {
        "event": event,
        "object": obj,
        "amount": amount,
        "plan": context.plan_name or obj.get("plan_id") or "your plan",
        "plan_amount": context.plan_amount,
        "date": _date(obj.get("trial_end")),
        "period_end": _date(obj.get("current_period_end")),
        "next_retry": _date(context.next_retry_at),
        "failure_reason": reason or "the payment was not approved",
        "name": context.customer_name or "there",
        "merchant": context.merchant_name,
        "occurred_on": _date(event.get("occurred_at")),
        "canceled_on": _date(obj.get("canceled_at")),
    }


def _date(value: datetime | str | None) -> str | None:
    """`January 31, 2026` from a datetime or an RFC 3339 string."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return f"{value:%B} {value.day}, {value.year}"
