"""Customers and their payment methods."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from app.billing.card import contains_card_number
from app.billing.subscription_state import TERMINAL_STATUSES
from app.clock import utcnow
from app.events import outbox
from app.ids import new_id
from app.models import (
    Customer,
    PaymentMethod,
    Provider,
    SentMail,
    Subscription,
)
from app.models.uow import UnitOfWork
from app.providers.errors import (
    InvalidPaymentMethod,
    ProviderError,
    ProviderNotConfigured,
    TransientProviderError,
)
from app.providers.registry import ProviderRegistry
from app.services import metadata
from app.services.clocks import get_clock
from app.services.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
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
    scope.get(uow.session, Customer, customer_id, lock=True)  # not while it is being deleted
    if provider is Provider.SANDBOX and scope.livemode:
        raise Forbidden("The sandbox provider is available in test mode only.")
    try:
        details = providers.call(
            provider.value, scope.tenant_id, lambda p: p.describe(token, livemode=scope.livemode),
            livemode=scope.livemode,
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


def update_customer(
    uow: UnitOfWork, scope: Scope, customer_id: str, changes: dict[str, Any]
) -> Customer:
    """Change the fields given (email, name); metadata keys are merged, "" removes one."""
    customer = scope.get(uow.session, Customer, customer_id, lock=True)
    if "email" in changes:
        customer.email = changes["email"]
    if "name" in changes:
        customer.name = changes["name"]
    if "metadata" in changes:
        customer.metadata_ = metadata.merged(customer.metadata_, changes["metadata"])
    outbox.record_customer(uow.session, "customer.updated", customer)
    return customer


def delete_customer(
    uow: UnitOfWork, providers: ProviderRegistry, scope: Scope, customer_id: str
) -> Customer:
    """Delete a customer with no live subscription: its payment methods are detached (at
    the provider first: an outage there writes nothing), its email and name erased from the
    customer, its stored mail records, idempotent replays, webhook deliveries and events not
    yet pruned; its payments stay, as the financial record."""
    session = uow.session
    customer = scope.get(session, Customer, customer_id, lock=True)
    live = session.scalar(
        select(func.count()).select_from(Subscription).where(
            Subscription.customer_id == customer.id,
            Subscription.status.not_in(TERMINAL_STATUSES),
        )
    )
    if live:
        raise Conflict(
            f"The customer has {live} subscription(s) that are neither canceled nor expired.",
            code="customer_has_subscriptions",
        )
    methods = session.scalars(
        scope.query(PaymentMethod)
        .where(PaymentMethod.customer_id == customer.id)
        .order_by(PaymentMethod.id)
        .with_for_update()
    ).all()
    for method in methods:
        _detach(uow, providers, scope, method)
    _erase(session, customer)
    customer.deleted_at = utcnow()
    outbox.record_customer(session, "customer.deleted", customer)
    return customer


def detach_payment_method(
    uow: UnitOfWork, providers: ProviderRegistry, scope: Scope, customer_id: str,
    method_id: str,
) -> PaymentMethod:
    """Detach one payment method (at the provider too) unless a subscription still uses it."""
    session = uow.session
    customer = scope.get(session, Customer, customer_id, lock=True)
    method = scope.get(session, PaymentMethod, method_id, lock=True)
    if method.customer_id != customer.id:  # another customer's: as missing as any other
        raise NotFound(f"No such payment method: '{method_id}'")
    in_use = session.scalar(
        select(Subscription.id).where(
            Subscription.payment_method_id == method.id,
            Subscription.status.not_in(TERMINAL_STATUSES),
        ).limit(1)
    )
    if in_use is not None:
        raise Conflict(
            f"Subscription {in_use} pays with this payment method; give it another first.",
            code="payment_method_in_use",
        )
    _detach(uow, providers, scope, method)
    return method


def _detach(
    uow: UnitOfWork, providers: ProviderRegistry, scope: Scope, method: PaymentMethod,
) -> None:
    provider = method.provider.value
    try:
        providers.call(provider, scope.tenant_id,
                       lambda p: p.detach(method.token, livemode=scope.livemode),
                       livemode=scope.livemode)
    except ProviderNotConfigured as exc:
        raise Conflict(f"{exc} It is needed to detach this payment method there.",
                       code="provider_not_configured") from exc
    except ProviderError as exc:
        raise Unavailable("The payment provider could not detach the payment method; "
                          "nothing was changed.", code=exc.code) from exc
    method.deleted_at = utcnow()
    outbox.record_payment_method(uow.session, "payment_method.detached", method)


def _erase(session: Session, customer: Customer) -> None:
    """Forget the customer's email and name everywhere the engine keeps them."""
    email = customer.email
    customer.email = customer.name = None
    if email:
        session.execute(
            update(SentMail)
            .where(SentMail.tenant_id == customer.tenant_id, SentMail.recipient == email)
            .values(recipient="")
        )
    params = {"id": customer.id, "tenant_id": customer.tenant_id, "livemode": customer.livemode,
              "topic": outbox.TOPICS["customer"]}
    session.execute(_ERASE_EVENTS, params)
    session.execute(_ERASE_DELIVERIES, params)
    session.execute(_ERASE_REPLAYS, params)


#: Its earlier customer.* events not yet pruned from the outbox (sent or not) ...
_ERASE_EVENTS = text(
    "UPDATE outbox_events SET payload = jsonb_set(jsonb_set(payload,"
    " '{data,object,email}', 'null'), '{data,object,name}', 'null')"
    " WHERE topic = :topic AND key = :id AND type LIKE 'customer.%'"
)
#: ... and the copies of those events that webhook deliveries keep to send (again) ...
_ERASE_DELIVERIES = text(
    "UPDATE webhook_deliveries SET payload = jsonb_set(jsonb_set(payload::jsonb,"
    " '{data,object,email}', 'null'), '{data,object,name}', 'null')::text"
    " WHERE tenant_id = :tenant_id AND livemode = :livemode AND event_type LIKE 'customer.%'"
    " AND payload::jsonb #>> '{data,object,id}' = :id"
)
#: ... and the stored answers of POST /customers (and updates) replayed for an idempotency key.
_ERASE_REPLAYS = text(
    "UPDATE idempotency_keys"
    " SET response_body = response_body || '{\"email\": null, \"name\": null}'"
    " WHERE tenant_id = :tenant_id AND livemode = :livemode"
    " AND response_body->>'object' = 'customer' AND response_body->>'id' = :id"
)
