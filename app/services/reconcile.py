"""Finding and finishing work that a crash, a lost message or a lost answer left behind."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_, select, update

from app.clock import utcnow
from app.models import Payment, PaymentMethod, PaymentStatus, Refund, RefundStatus
from app.models.uow import UnitOfWork, UnitOfWorkFactory
from app.providers.errors import ProviderError, ProviderRateLimited
from app.providers.registry import ProviderRegistry
from app.services.charge import claim_of, settle_result

log = logging.getLogger(__name__)


def claim_stale_work(uow: UnitOfWork, *, stale_seconds: int, batch: int) -> int:
    """Claim a batch of stuck payments and refunds and re-drive each after commit.

    Rows are locked with SKIP LOCKED and their `updated_at` pushed forward, so several
    schedulers running at once each take different rows and none is re-driven twice.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=stale_seconds)
    stuck = uow.session.execute(
        select(Payment.id, Payment.status)
        .where(
            Payment.status.in_(
                (PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN)
            ),
            Payment.updated_at < cutoff,
            or_(Payment.lease_until.is_(None), Payment.lease_until < now),
        )
        .order_by(Payment.updated_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    ).all()
    refunds = list(
        uow.session.scalars(
            select(Refund.id)
            .where(Refund.status == RefundStatus.PENDING, Refund.updated_at < cutoff)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    )
    if stuck:
        uow.session.execute(
            update(Payment).where(Payment.id.in_([p.id for p in stuck])).values(updated_at=now)
        )
    if refunds:
        uow.session.execute(update(Refund).where(Refund.id.in_(refunds)).values(updated_at=now))
    work = [("reconcile_payment" if status is PaymentStatus.UNKNOWN else "charge_payment", pid)
            for pid, status in stuck] + [("refund_payment", rid) for rid in refunds]
    for actor, object_id in work:
        uow.enqueue(actor, object_id)
    return len(stuck) + len(refunds)


def reconcile_payment(
    uows: UnitOfWorkFactory, providers: ProviderRegistry, payment_id: str
) -> None:
    """Settle an `unknown` payment from the provider's truth, never charging it again."""
    with uows() as uow:
        payment = uow.session.get(Payment, payment_id)
        if payment is None or payment.status is not PaymentStatus.UNKNOWN or not payment.attempts:
            return
        attempt = payment.attempts[-1]
        method = uow.session.get_one(PaymentMethod, payment.payment_method_id)
        claim = claim_of(payment, method, attempt)
        sent_at = attempt.created_at
    request = claim.request
    try:
        found = providers.call(claim.provider, request.tenant_id, lambda p: p.lookup(request),
                               livemode=request.livemode)
    except ProviderRateLimited as exc:
        log.warning("lookup rate limited; will try again", extra={"payment_id": payment_id})
        if exc.retry_after:
            _not_before(uows, payment_id, exc.retry_after)
        return
    except ProviderError:
        log.warning("lookup failed; will try again", extra={"payment_id": payment_id})
        return
    if found is not None:
        settle_result(uows, claim, found)
        return
    window = providers.get(claim.provider, request.tenant_id).idempotency_window
    if window is not None and utcnow() - sent_at > window:
        # The provider may have forgotten the key: sending it again could charge twice.
        # The payment stays `unknown` (lookups go on) for someone to check at the provider.
        log.error("unknown payment past the provider's idempotency window: not sent again",
                  extra={"payment_id": payment_id, "provider": claim.provider})
        return
    # The provider never saw the attempt: send it again, with the same idempotency key.
    with uows() as uow:
        uow.session.execute(
            update(Payment)
            .where(Payment.id == payment_id, Payment.status == PaymentStatus.UNKNOWN)
            .values(status=PaymentStatus.PROCESSING, lease_until=None)
        )
        uow.enqueue("charge_payment", payment_id)
        uow.commit()


def _not_before(uows: UnitOfWorkFactory, payment_id: str, seconds: float) -> None:
    """Keep an `unknown` payment from being re-driven before the provider's Retry-After:
    `claim_stale_work` leaves a payment alone while its lease runs."""
    with uows() as uow:
        uow.session.execute(
            update(Payment)
            .where(Payment.id == payment_id, Payment.status == PaymentStatus.UNKNOWN)
            .values(lease_until=utcnow() + timedelta(seconds=seconds),
                    updated_at=Payment.updated_at)
        )
        uow.commit()
