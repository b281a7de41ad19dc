"""One-time payments: taking them at the front door, reading them, refunding them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.cache import Cache
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
from app.models.uow import UnitOfWork
from app.services.errors import Conflict, Invalid
from app.services.scope import Scope


def create_payment(
    uow: UnitOfWork,
    cache: Cache,
    scope: Scope,
    *,
    amount: int,
    currency: str,
    customer_id: str,
    payment_method_id: str,
    description: str | None,
    metadata: dict[str, Any],
) -> Payment:
    """Record a pending one-time payment and its `payment.created` event; charge after commit."""
    method = cache.payment_method(
        scope, payment_method_id, lambda: _method_owner(uow.session, scope, payment_method_id)
    )
    if method is None or method["customer_id"] != customer_id:  # the customer's own method
        scope.get(uow.session, Customer, customer_id)  # implies the customer; else say which
        scope.get(uow.session, PaymentMethod, payment_method_id)
        raise Invalid("payment_method_id", "This payment method belongs to another customer.")
    payment = pending_payment(
        tenant_id=scope.tenant_id, livemode=scope.livemode, customer_id=customer_id,
        payment_method_id=payment_method_id, amount=amount, currency=currency,
        description=description, metadata=metadata,
    )
    uow.insert(payment)  # at the commit, in one statement with its event (and Idempotency-Key)
    outbox.record_payment(uow.session, "payment.created", payment)
    uow.enqueue("charge_payment", payment.id)
    return payment


def _method_owner(session: Session, scope: Scope, method_id: str) -> dict[str, Any] | None:
    query = scope.query(PaymentMethod).where(PaymentMethod.id == method_id)
    customer_id = session.scalar(query.with_only_columns(PaymentMethod.customer_id))
    return None if customer_id is None else {"customer_id": customer_id}


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
        attempts=[],
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
