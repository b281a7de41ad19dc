"""One-time payments: taking them at the front door, reading them, refunding them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn

from sqlalchemy import bindparam, func, select

from app.clock import utcnow
from app.events import outbox
from app.ids import new_id
from app.models import (
    Customer,
    Payment,
    PaymentMethod,
    PaymentPurpose,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from app.models.uow import Requirement, UnitOfWork
from app.services.errors import Conflict, Invalid
from app.services.scope import Scope

#: The payment method is in scope, attached, and the customer's: checked by the INSERT itself.
_OWNED = select(PaymentMethod.id).where(
    PaymentMethod.id == bindparam("owned_method"),
    PaymentMethod.customer_id == bindparam("owned_customer"),
    PaymentMethod.tenant_id == bindparam("owned_tenant"),
    PaymentMethod.livemode == bindparam("owned_livemode"),
    PaymentMethod.deleted_at.is_(None),
).exists()


def create_payment(
    uow: UnitOfWork,
    scope: Scope,
    *,
    amount: int,
    currency: str,
    customer_id: str,
    payment_method_id: str,
    description: str | None,
    metadata: dict[str, Any],
) -> Payment:
    """Record a pending one-time payment and its `payment.created` event; charge after commit.

    The payment is written only with the customer's own payment method (checked by the same
    statement); otherwise nothing is written and the refusal names what is wrong.
    """
    def refuse() -> NoReturn:
        scope.get(uow.session, Customer, customer_id)  # implies the customer; else say which
        scope.get(uow.session, PaymentMethod, payment_method_id)
        raise Invalid("payment_method_id", "This payment method belongs to another customer.")

    payment = pending_payment(
        tenant_id=scope.tenant_id, livemode=scope.livemode, customer_id=customer_id,
        payment_method_id=payment_method_id, amount=amount, currency=currency,
        description=description, metadata=metadata,
    )
    uow.insert(payment)  # at the commit, in one statement with its event (and Idempotency-Key)
    uow.require(Requirement(_OWNED, {
        "owned_method": payment_method_id, "owned_customer": customer_id,
        "owned_tenant": scope.tenant_id, "owned_livemode": scope.livemode}, refuse))
    outbox.record_payment(uow.session, "payment.created", payment)
    uow.enqueue("charge_payment", payment.id)
    return payment


def pending_payment(
    *,
    tenant_id: str,
    livemode: bool,
    customer_id: str,
    payment_method_id: str,
    amount: int,
    currency: str,
    purpose: PaymentPurpose = PaymentPurpose.ONE_TIME,
    subscription_id: str | None = None,
    period_start: datetime | None = None,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Payment:
    """A new pending payment, for the caller to add with its `payment.created` event (and to
    charge).

    Every column is set here, so nothing needs a flush: many payments go in one batch.
    `attempts` is left unset: the first read makes it an empty list, for less than setting
    `attempts=[]` here (a bulk replace, 10% of the workers' samples in bench/renewals.py).
    """
    now = utcnow()
    return Payment(
        id=new_id("pay"),
        tenant_id=tenant_id,
        livemode=livemode,
        customer_id=customer_id,
        payment_method_id=payment_method_id,
        subscription_id=subscription_id,
        purpose=purpose,
        period_start=period_start,
        amount=amount,
        currency=currency,
        status=PaymentStatus.PENDING,
        description=description,
        metadata_=metadata or {},
        amount_refunded=0,
        created_at=now,
        updated_at=now,
    )


def create_refund(
    uow: UnitOfWork, scope: Scope, payment_id: str, amount: int | None
) -> Refund:
    """Refund part or the rest of a succeeded payment; the provider call runs in a worker."""
    payment = scope.get(uow.session, Payment, payment_id, lock=True)
    if payment.status is not PaymentStatus.SUCCEEDED:
        raise Conflict(
            f"Only succeeded payments can be refunded; this one is {payment.status.value}.",
            code="payment_not_refundable",
        )
    reserved = uow.session.scalar(
        select(func.coalesce(func.sum(Refund.amount), 0)).where(
            Refund.payment_id == payment.id, Refund.status != RefundStatus.FAILED
        )
    )
    available = payment.amount - int(reserved or 0)
    if available <= 0:
        raise Invalid(
            "amount", "This payment has already been refunded in full.", code="already_refunded"
        )
    amount = available if amount is None else amount
    if amount > available:
        raise Invalid(
            "amount", f"At most {available} can still be refunded.", code="amount_too_large"
        )
    refund = Refund(
        id=new_id("re"),
        tenant_id=scope.tenant_id,
        livemode=scope.livemode,
        payment_id=payment.id,
        amount=amount,
        status=RefundStatus.PENDING,
    )
    uow.session.add(refund)
    uow.session.flush()
    uow.enqueue("refund_payment", refund.id)
    return refund
