"""Failover of one-time payments to the tenant's secondary provider.

A tenant may name a failover provider (`flask --app wsgi providers failover TENANT paypal`).
When a one-time payment's provider could not even be reached (connection refused, or its
circuit breaker is open) by an attempt never sent before, and every earlier attempt is
known not to have charged (charge._unreached), nothing can have been charged anywhere, so
the payment is pointed
at the customer's newest payment method at the failover provider, and its next attempt
(the worker's retry, moments later) goes there. Renewals never fail over: they wait for
their provider (dunning and reconciliation already cover them), and an answer that may
have reached the provider (a timeout, a reset, a 5xx on the charge) never fails over either:
it is settled at that provider first. The sandbox is never a failover provider.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Payment, PaymentMethod, PaymentPurpose, Provider, Tenant

log = logging.getLogger(__name__)


def fail_over(session: Session, payment: Payment, provider: str) -> bool:
    """Point a one-time payment at the customer's method on the tenant's failover provider.

    True when it was switched; the caller's transaction records it with the failed attempt.
    """
    if payment.purpose is not PaymentPurpose.ONE_TIME:
        return False
    secondary = session.scalar(select(Tenant.failover_provider).where(
        Tenant.id == payment.tenant_id))
    if secondary is None or secondary == provider:
        return False
    if secondary == Provider.SANDBOX.value:  # test money never stands in for a real charge
        log.error("failover to the sandbox refused", extra={"payment_id": payment.id})
        return False
    method = session.scalar(
        select(PaymentMethod)
        .where(
            PaymentMethod.tenant_id == payment.tenant_id,
            PaymentMethod.livemode == payment.livemode,
            PaymentMethod.customer_id == payment.customer_id,
            PaymentMethod.provider == Provider(secondary),
        )
        .order_by(PaymentMethod.id.desc())
        .limit(1)
    )
    if method is None:
        return False
    log.warning("failing over", extra={"payment_id": payment.id, "from_provider": provider,
                                       "to_provider": secondary})
    payment.payment_method_id = method.id
    return True


def set_failover(session: Session, tenant_id: str, provider: str | None) -> bool:
    """Set (or clear, with None) a tenant's failover provider; False for an unknown tenant."""
    tenant = session.get(Tenant, tenant_id, with_for_update=True)
    if tenant is None:
        return False
    tenant.failover_provider = Provider(provider).value if provider else None
    return True
