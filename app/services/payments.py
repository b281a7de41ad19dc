"""One-time payments: taking them at the front door, reading them, refunding them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from app.events import outbox
from app.ids import new_id
from app.models import Customer, Payment, PaymentMethod, PaymentStatus, Refund, RefundStatus
from app.models.uow import UnitOfWork
from app.services.errors import Conflict, Invalid
from app.services.scope import Scope

Enqueue = Callable[..., None]


def create_payment(
    uow: UnitOfWork,
    scope: Scope,
    enqueue: Enqueue,
    *,
    amount: int,
    currency: str,
    customer_id: str,
    payment_method_id: str,
    description: str | None,
    metadata: dict[str, Any],
    subscription_id: str | None = None,
) -> Payment:
    """Record a pending payment and its `payment.created` event; charge it after commit."""
    scope.get(uow.session, Customer, customer_id)
    method = scope.get(uow.session, PaymentMethod, payment_method_id)
    if method.customer_id != customer_id:
        raise Invalid("payment_method_id", "This payment method belongs to another customer.")
    payment = Payment(
        id=new_id("pay"),
        tenant_id=scope.tenant_id,
        livemode=scope.livemode,
        customer_id=customer_id,
        payment_method_id=payment_method_id,
        subscription_id=subscription_id,
        amount=amount,
        currency=currency,
        status=PaymentStatus.PENDING,
        description=description,
        metadata_=metadata,
        attempts=[],
    )
    uow.session.add(payment)
    uow.session.flush()
    outbox.record_payment(uow.session, "payment.created", payment)
    uow.after_commit(lambda: enqueue("charge_payment", payment.id))
    return payment


def create_refund(
    uow: UnitOfWork, scope: Scope, enqueue: Enqueue, payment_id: str, amount: int | None
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
    uow.after_commit(lambda: enqueue("refund_payment", refund.id))
    return refund
