"""Charging a payment at its provider: at most once, whatever crashes or retries happen.

A worker first *claims* the payment (status compare-and-set plus a lease) and records the
attempt, commits, then calls the provider with the attempt's idempotency key, then settles
the outcome and its event in a second transaction. A worker that dies in between leaves a
`processing` payment whose lease expires; whoever claims it next re-sends the same attempt
with the same key, so the provider answers with the first charge instead of making another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update

from app.clock import utcnow
from app.events import outbox
from app.ids import new_id
from app.models import AttemptStatus, Payment, PaymentAttempt, PaymentMethod, PaymentStatus
from app.models.uow import UnitOfWork, UnitOfWorkFactory
from app.providers.base import ChargeRequest, ChargeResult
from app.providers.errors import OutcomeUnknown, PaymentDeclined, TransientProviderError
from app.providers.registry import ProviderRegistry
from app.services import billing_cycle

log = logging.getLogger(__name__)
IN_FLIGHT = (AttemptStatus.PROCESSING, AttemptStatus.UNKNOWN)


@dataclass(frozen=True)
class Claim:
    provider: str
    request: ChargeRequest


def charge_payment(
    uows: UnitOfWorkFactory, providers: ProviderRegistry, payment_id: str, *, lease_seconds: int
) -> None:
    """Claim, charge and settle one payment; transient provider errors propagate for retry."""
    claim = _claim(uows, payment_id, lease_seconds)
    if claim is None:
        return
    request = claim.request
    try:
        result = providers.call(claim.provider, request.tenant_id, lambda p: p.charge(request))
    except PaymentDeclined as exc:
        _settle(uows, request, AttemptStatus.FAILED, failure=(exc.code, exc.message),
                hard=exc.hard)
    except OutcomeUnknown:
        _settle(uows, request, AttemptStatus.UNKNOWN)
    except TransientProviderError as exc:
        _settle(uows, request, AttemptStatus.FAILED, failure=(exc.code, str(exc)), retry=True)
        raise
    else:
        settle_result(uows, request, result)


def give_up(uows: UnitOfWorkFactory, payment_id: str) -> None:
    """Fail a payment whose transient retries are exhausted (the provider stayed down)."""
    with uows() as uow:
        payment = uow.session.get(Payment, payment_id, with_for_update=True)
        if payment is None or payment.status is not PaymentStatus.PROCESSING:
            return
        if payment.lease_until is not None and payment.lease_until > utcnow():
            return
        payment.status = PaymentStatus.FAILED
        payment.failure_code = "provider_unavailable"
        payment.failure_message = "The payment provider could not be reached; nothing was charged."
        outbox.record_payment(uow.session, "payment.failed", payment)
        billing_cycle.on_payment_settled(uow.session, payment)
        uow.commit()


def charge_request(
    payment: Payment, method: PaymentMethod, attempt: PaymentAttempt
) -> ChargeRequest:
    """The provider request of one attempt; the same attempt always yields the same key."""
    return ChargeRequest(
        tenant_id=payment.tenant_id,
        livemode=payment.livemode,
        payment_id=payment.id,
        attempt=attempt.number,
        idempotency_key=attempt.idempotency_key,
        amount=payment.amount,
        currency=payment.currency,
        token=method.token,
        off_session=payment.subscription_id is not None,
        description=payment.description,
    )


def _claim(uows: UnitOfWorkFactory, payment_id: str, lease_seconds: int) -> Claim | None:
    now = utcnow()
    with uows() as uow:
        claimed = uow.session.execute(
            update(Payment)
            .where(
                Payment.id == payment_id,
                or_(
                    Payment.status == PaymentStatus.PENDING,
                    (Payment.status == PaymentStatus.PROCESSING)
                    & or_(Payment.lease_until.is_(None), Payment.lease_until < now),
                ),
            )
            .values(
                status=PaymentStatus.PROCESSING,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(Payment.id)
        ).scalar_one_or_none()
        if claimed is None:
            return None
        payment = uow.session.get_one(Payment, payment_id, populate_existing=True)
        method = uow.session.get_one(PaymentMethod, payment.payment_method_id)
        attempt = _current_attempt(uow, payment, method.provider.value)
        uow.commit()
        return Claim(provider=attempt.provider, request=charge_request(payment, method, attempt))


def _current_attempt(uow: UnitOfWork, payment: Payment, provider: str) -> PaymentAttempt:
    """The attempt left in flight by a crash or lost answer, else a new one."""
    last = payment.attempts[-1] if payment.attempts else None
    if last is not None and last.status in IN_FLIGHT:
        return last
    number = last.number + 1 if last else 1
    attempt = PaymentAttempt(
        id=new_id("att"),
        payment_id=payment.id,
        number=number,
        status=AttemptStatus.PROCESSING,
        provider=provider,
        idempotency_key=f"{payment.id}:{number}",
    )
    uow.session.add(attempt)
    payment.attempts.append(attempt)
    uow.session.flush()
    return attempt


def settle_result(uows: UnitOfWorkFactory, request: ChargeRequest, result: ChargeResult) -> None:
    """Record what the provider did with an attempt: succeeded or waiting for the customer."""
    if result.status == "succeeded":
        _settle(uows, request, AttemptStatus.SUCCEEDED, reference=result.reference)
    else:
        _settle(uows, request, AttemptStatus.REQUIRES_ACTION, redirect_url=result.redirect_url)


def _settle(
    uows: UnitOfWorkFactory,
    request: ChargeRequest,
    status: AttemptStatus,
    *,
    reference: str | None = None,
    failure: tuple[str, str] | None = None,
    redirect_url: str | None = None,
    retry: bool = False,
    hard: bool = False,
) -> None:
    """Record an attempt's outcome and the payment's new status and event, once."""
    with uows() as uow:
        payment = uow.session.get(
            Payment, request.payment_id, with_for_update=True, populate_existing=True
        )
        assert payment is not None
        attempt = uow.session.scalar(
            select(PaymentAttempt).where(PaymentAttempt.idempotency_key == request.idempotency_key)
        )
        if (
            attempt is None
            or attempt.status not in IN_FLIGHT
            or (payment.status not in (PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN))
        ):
            log.info("outcome already settled", extra={"payment_id": payment.id})
            return
        attempt.status = status
        attempt.provider_reference = reference
        attempt.failure_code = failure[0] if failure else None
        payment.lease_until = None
        if retry:
            pass  # stays processing; the actor's retry makes the next attempt
        elif status is AttemptStatus.UNKNOWN:
            payment.status = PaymentStatus.UNKNOWN
        else:
            payment.status = PaymentStatus(status.value)
            payment.failure_code, payment.failure_message = failure or (None, None)
            payment.next_action = (
                {"type": "redirect_to_url", "redirect_url": redirect_url} if redirect_url else None
            )
            outbox.record_payment(uow.session, f"payment.{status.value}", payment)
            billing_cycle.on_payment_settled(uow.session, payment, hard=hard)
        uow.commit()
