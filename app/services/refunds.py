"""Sending a refund to the provider, once per refund id."""

from __future__ import annotations

import logging

from app.clock import utcnow
from app.events import outbox
from app.models import Payment, Refund, RefundStatus
from app.models.uow import UnitOfWorkFactory
from app.providers.base import RefundRequest
from app.providers.errors import OutcomeUnknown, PaymentDeclined
from app.providers.registry import ProviderRegistry

log = logging.getLogger(__name__)


def process_refund(uows: UnitOfWorkFactory, providers: ProviderRegistry, refund_id: str) -> None:
    """Refund at the provider and record it; the refund row stays locked meanwhile.

    The refund id is the idempotency key. The provider is first asked for a refund made
    for our refund id (a crash or a lost answer before our commit); only when it has none,
    and only while it still remembers the key (its idempotency window, counted from the
    refund's creation), is the refund sent, so a re-send can never refund twice. Past the
    window it stays `pending` and an error is logged for someone to check at the provider.
    """
    with uows() as uow:
        refund = uow.session.get(Refund, refund_id, with_for_update={"skip_locked": True})
        if refund is None or refund.status is not RefundStatus.PENDING:
            return
        payment = uow.session.get_one(Payment, refund.payment_id, with_for_update=True)
        charged = next(a for a in reversed(payment.attempts) if a.provider_reference)
        request = RefundRequest(
            tenant_id=refund.tenant_id,
            livemode=refund.livemode,
            refund_id=refund.id,
            payment_reference=charged.provider_reference or "",
            idempotency_key=refund.id,
            amount=refund.amount,
            currency=payment.currency,
        )
        window = providers.get(charged.provider, refund.tenant_id).idempotency_window
        try:
            result = providers.call(charged.provider, refund.tenant_id,
                                    lambda p: p.lookup_refund(request), livemode=refund.livemode)
            if result is None and window is not None and utcnow() - refund.created_at > window:
                log.error("refund past the provider's idempotency window: not sent again",
                          extra={"refund_id": refund.id, "provider": charged.provider})
                return
            if result is None:
                result = providers.call(charged.provider, refund.tenant_id,
                                        lambda p: p.refund(request), livemode=refund.livemode)
        except OutcomeUnknown:
            return  # stays pending; reconciliation sends it again with the same key
        except PaymentDeclined as exc:
            refund.status = RefundStatus.FAILED
            refund.failure_code = exc.code
            uow.commit()
            return
        refund.status = RefundStatus.SUCCEEDED
        refund.provider_reference = result.reference
        payment.amount_refunded += refund.amount
        outbox.record_payment(uow.session, "payment.refunded", payment)
        uow.commit()
