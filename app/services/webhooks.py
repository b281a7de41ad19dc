"""Signed provider webhooks: verify, then move waiting payments to their final status.

The (unverified) body names one of our payments; its tenant's credentials verify the
signature (Stripe: the endpoint secret; PayPal: its verify-webhook-signature API). Only
then does anything change, and always through the worker's own settle path:

- `succeeded` settles a payment in `requires_action`, `processing` or `unknown` (money was
  taken; a provider never un-succeeds, so order of delivery does not matter);
- `failed` settles only a payment in `requires_action`, and only if the provider still
  says it is not paid and not waiting for the customer (a stale failure is ignored);
  failures of `processing`/`unknown` payments come from re-sending their own key instead;
- `approved` (PayPal: the buyer approved) sends a `requires_action` payment back to the
  worker, whose next attempt captures the approved order.

A duplicate or late delivery finds the payment already settled and changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import update

from app.clock import utcnow
from app.ids import is_id
from app.models import AttemptStatus, Payment, PaymentMethod, PaymentStatus
from app.models.uow import UnitOfWorkFactory
from app.providers import paypal, stripe
from app.providers.base import ChargeResult, WebhookEvent, WebhookVerifier
from app.providers.errors import ProviderNotConfigured, WebhookRejected
from app.providers.registry import ProviderRegistry
from app.services.charge import Claim, Outcome, claim_of, settle, settle_result
from app.services.errors import ServiceError

log = logging.getLogger(__name__)
HINTS: dict[str, Callable[[bytes], str | None]] = {
    "stripe": stripe.payment_hint,
    "paypal": paypal.payment_hint,
}
WAITING = (PaymentStatus.REQUIRES_ACTION, PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN)
_ATTEMPTS = (AttemptStatus.REQUIRES_ACTION, AttemptStatus.PROCESSING, AttemptStatus.UNKNOWN)


@dataclass(frozen=True)
class Received:
    """What a verified delivery did: `settled`, `resumed` or `ignored` (and why)."""

    event_id: str
    result: str


def receive(
    uows: UnitOfWorkFactory,
    providers: ProviderRegistry,
    provider: str,
    body: bytes,
    headers: Mapping[str, str],
) -> Received:
    """Verify one delivery and apply it; WebhookRejected when it cannot be trusted.

    An event that names none of our payments is acknowledged and ignored (it cannot be
    verified without a payment's tenant, and changes nothing): a provider disables an
    endpoint that keeps failing. A payment id that is not one of ours in shape is a 400.
    """
    try:
        json.loads(body)
    except ValueError:
        raise WebhookRejected("the body is not a JSON event") from None
    payment_id = HINTS[provider](body) if provider in HINTS else None
    if payment_id is None:
        return Received("", "ignored: the event names none of our payments")
    if not is_id(payment_id, "pay"):
        raise ServiceError("The event's payment id is not a payment id.",
                           code="invalid_payment_id")
    with uows() as uow:
        payment = uow.session.get(Payment, payment_id)
        if payment is None:
            return Received("", "ignored: the event names none of our payments")
        tenant_id, livemode = payment.tenant_id, payment.livemode
    try:
        adapter = providers.get(provider, tenant_id)
    except ProviderNotConfigured as exc:
        raise WebhookRejected(str(exc)) from exc
    if not isinstance(adapter, WebhookVerifier):
        raise WebhookRejected(f"{provider} sends no webhooks")
    lowered = {name.lower(): value for name, value in headers.items()}
    event = adapter.verify_webhook(body, lowered, livemode=livemode)
    if event.payment_id != payment_id:
        raise WebhookRejected("the verified event is about another payment")
    result = apply(uows, providers, provider, event)
    log.info("webhook received", extra={"provider": provider, "event_id": event.id,
                                         "payment_id": payment_id, "result": result})
    return Received(event.id, result)


def apply(uows: UnitOfWorkFactory, providers: ProviderRegistry, provider: str,
          event: WebhookEvent) -> str:
    """Apply a verified event to its payment, through the settle path; idempotent."""
    if event.kind == "other":
        return "ignored: not an event we act on"
    claim, status = _waiting_claim(uows, event.payment_id, provider)
    if claim is None or status is None:
        return "ignored: the payment is not waiting for this provider"
    if event.kind == "succeeded":
        mismatch = _mismatch(claim, event)
        if mismatch is not None:
            log.warning("webhook does not match its payment; ignored",
                        extra={"provider": provider, "event_id": event.id,
                               "payment_id": event.payment_id, "mismatch": mismatch})
            return f"ignored: {mismatch}"
        settle_result(uows, claim, ChargeResult(status="succeeded",
                                                reference=event.reference or ""))
        return "settled"
    if status is not PaymentStatus.REQUIRES_ACTION:
        return "ignored: only a payment waiting for its customer is settled by this event"
    if event.kind == "approved":
        return _resume(uows, event.payment_id)
    return _fail(uows, providers, claim, event)


def _mismatch(claim: Claim, event: WebhookEvent) -> str | None:
    """Why a `succeeded` event cannot be about this payment's charge, or None if it can."""
    request = claim.request
    if (event.amount, event.currency) != (request.amount, request.currency):
        return "the amount does not match the payment's"
    if request.reference and event.intent != request.reference:
        return "the provider's intent does not match the payment's"
    return None


def _waiting_claim(
    uows: UnitOfWorkFactory, payment_id: str, provider: str
) -> tuple[Claim | None, PaymentStatus | None]:
    with uows() as uow:
        payment = uow.session.get(Payment, payment_id)
        if payment is None or payment.status not in WAITING or not payment.attempts:
            return None, None
        attempt = payment.attempts[-1]
        if attempt.provider != provider or attempt.status not in _ATTEMPTS:
            return None, None
        method = uow.session.get_one(PaymentMethod, payment.payment_method_id)
        return claim_of(payment, method, attempt), payment.status


def _fail(uows: UnitOfWorkFactory, providers: ProviderRegistry, claim: Claim,
          event: WebhookEvent) -> str:
    """Fail a payment waiting for its customer, unless the provider says otherwise now."""
    request = claim.request
    now = providers.call(claim.provider, request.tenant_id, lambda p: p.lookup(request),
                         livemode=request.livemode)
    if now is not None and now.status == "succeeded":
        settle_result(uows, claim, now)
        return "settled: the provider says it succeeded"
    if now is not None:
        return "ignored: stale, the provider still waits for the customer"
    code, message, hard = event.failure or ("payment_failed", "The payment failed.", False)
    settle(uows, [Outcome(claim, AttemptStatus.FAILED, failure=(code, message), hard=hard)])
    return "settled"


def _resume(uows: UnitOfWorkFactory, payment_id: str) -> str:
    """The buyer approved: hand the payment back to the worker for its next attempt."""
    with uows() as uow:
        resumed = uow.session.execute(
            update(Payment)
            .where(Payment.id == payment_id, Payment.status == PaymentStatus.REQUIRES_ACTION)
            .values(status=PaymentStatus.PROCESSING, lease_until=None, next_action=None,
                    updated_at=utcnow())
            .returning(Payment.id)
        ).first()
        if resumed is None:
            return "ignored: already resumed"
        uow.enqueue("charge_payment", payment_id)
        uow.commit()
    return "resumed"
