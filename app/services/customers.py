"""Customers and their payment methods."""

from __future__ import annotations

from typing import Any

from app.billing.card import contains_card_number
from app.ids import new_id
from app.models import Customer, PaymentMethod, Provider
from app.models.uow import UnitOfWork
from app.providers.errors import (
    InvalidPaymentMethod,
    ProviderError,
    ProviderNotConfigured,
    TransientProviderError,
)
from app.providers.registry import ProviderRegistry
from app.services.clocks import get_clock
from app.services.errors import Forbidden, Invalid, Unavailable
from app.services.scope import Scope


def create_customer(
    uow: UnitOfWork,
    scope: Scope,
    *,
    email: str | None,
    name: str | None,
    metadata: dict[str, Any],
    test_clock_id: str | None = None,
) -> Customer:
    """Add a customer to the caller's tenant and mode, optionally living on a test clock."""
    if test_clock_id is not None:
        get_clock(uow.session, scope, test_clock_id)
    customer = Customer(
        test_clock_id=test_clock_id,
        id=new_id("cus"),
        tenant_id=scope.tenant_id,
        livemode=scope.livemode,
        email=email,
        name=name,
        metadata_=metadata,
    )
    uow.session.add(customer)
    uow.session.flush()
    return customer


def attach_payment_method(
    uow: UnitOfWork,
    providers: ProviderRegistry,
    scope: Scope,
    customer_id: str,
    *,
    provider: Provider,
    token: str,
) -> PaymentMethod:
    """Save a provider-side token for a customer; raw card numbers are refused."""
    if contains_card_number(token):
        raise Invalid(
            "token",
            "Raw card numbers are not accepted; send the provider's token instead.",
            code="raw_card_number",
        )
    scope.get(uow.session, Customer, customer_id)
    if provider is Provider.SANDBOX and scope.livemode:
        raise Forbidden("The sandbox provider is available in test mode only.")
    try:
        details = providers.call(
            provider.value, scope.tenant_id, lambda p: p.describe(token, livemode=scope.livemode)
        )
    except ProviderNotConfigured as exc:
        raise Invalid("provider", str(exc), code="provider_not_configured") from exc
    except InvalidPaymentMethod as exc:
        raise Invalid("token", str(exc), code="invalid_payment_method") from exc
    except TransientProviderError as exc:
        raise Unavailable("The payment provider could not be reached; nothing was written.",
                          code=exc.code) from exc
    except ProviderError as exc:
        raise Invalid("token", "The provider could not check this token.", code=exc.code) from exc
    method = PaymentMethod(
        id=new_id("pm"),
        tenant_id=scope.tenant_id,
        livemode=scope.livemode,
        customer_id=customer_id,
        provider=provider,
        token=token,
        brand=details.brand,
        last4=details.last4,
    )
    uow.session.add(method)
    uow.session.flush()
    return method
