"""The Protocol every provider adapter implements, and the values it exchanges."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, Protocol, runtime_checkable

from app.providers.errors import ProviderError


@dataclass(frozen=True)
class ChargeRequest:
    """One attempt to charge; `idempotency_key` is derived from payment id and attempt number."""

    tenant_id: str
    livemode: bool
    payment_id: str
    attempt: int
    idempotency_key: str
    amount: int
    currency: str
    token: str
    off_session: bool
    description: str | None = None
    #: What an earlier answer to this attempt named (OutcomeUnknown.reference), if anything.
    reference: str | None = None


@dataclass(frozen=True)
class ChargeResult:
    """What the provider did: succeeded, or needs the customer (`redirect_url`)."""

    status: Literal["succeeded", "requires_action"]
    reference: str
    redirect_url: str | None = None


@dataclass(frozen=True)
class RefundRequest:
    tenant_id: str
    livemode: bool
    refund_id: str
    payment_reference: str
    idempotency_key: str
    amount: int
    currency: str


@dataclass(frozen=True)
class RefundResult:
    reference: str


@dataclass(frozen=True)
class CardDetails:
    """Display details of a payment method, as far as the provider tells them."""

    brand: str | None
    last4: str | None


@dataclass(frozen=True)
class WebhookEvent:
    """A verified provider notification about one of our payments.

    `kind`: `succeeded` (money taken; `reference` names the charge), `failed` (`failure` is
    (code, message, hard)), `approved` (the buyer approved; the charge can be completed) or
    `other` (nothing for us to do). A `succeeded` event also carries the money it says moved
    (`amount` in minor units, `currency`) and `intent`, the provider's object our attempt
    created (Stripe: the PaymentIntent; PayPal: the order), to be checked against the payment.
    """

    id: str
    payment_id: str
    livemode: bool
    kind: Literal["succeeded", "failed", "approved", "other"]
    reference: str | None = None
    failure: tuple[str, str, bool] | None = None
    amount: int | None = None
    currency: str | None = None
    intent: str | None = None


@runtime_checkable
class WebhookVerifier(Protocol):
    """An adapter that receives signed webhooks (Stripe, PayPal)."""

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], *, livemode: bool
    ) -> WebhookEvent:
        """The event if its signature checks out; WebhookRejected otherwise.

        `headers` are the delivery's headers with lower-cased names.
        """
        ...


class PaymentProvider(Protocol):
    """A payment provider. Raises only `app.providers.errors` exceptions."""

    name: str
    #: How long the provider remembers an idempotency key (None: for good). Past it, an
    #: attempt that `lookup` cannot find is never sent again: that could charge twice.
    idempotency_window: timedelta | None

    def describe(self, token: str, *, livemode: bool) -> CardDetails:
        """Check a token can be charged here and return its display details."""
        ...

    def detach(self, token: str, *, livemode: bool) -> None:
        """Make a saved payment method unusable at the provider (the customer or merchant
        removed it); one the provider does not know, or no longer holds, is already so."""
        ...

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge once per idempotency key; a repeated key returns the first outcome."""
        ...

    def charge_many(self, requests: Sequence[ChargeRequest]) -> list[ChargeResult | ProviderError]:
        """Each request charged as `charge` would, independently: its result or its error."""
        ...

    def lookup(self, request: ChargeRequest) -> ChargeResult | None:
        """The charge made with this request's idempotency key, or None if there is none."""
        ...

    def cancel(self, request: ChargeRequest) -> ChargeResult | None:
        """Stop an attempt that waits for the customer, so that finishing it later takes no
        money; None once it is stopped, or its result if it succeeded meanwhile."""
        ...

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund part or all of a charge, once per idempotency key."""
        ...

    def lookup_refund(self, request: RefundRequest) -> RefundResult | None:
        """The refund made for our refund id (`refund_id`), or None if there is none."""
        ...


def charge_each(
    charge: Callable[[ChargeRequest], ChargeResult],
    requests: Sequence[ChargeRequest],
    concurrency: int,
) -> list[ChargeResult | ProviderError]:
    """`charge` over `requests`, up to `concurrency` calls at once, results in order.

    A remote provider's call mostly waits on the network (hundreds of ms at Stripe): a batch
    of renewals charged one after the other would take a minute per message.
    """

    def one(request: ChargeRequest) -> ChargeResult | ProviderError:
        try:
            return charge(request)
        except ProviderError as exc:
            return exc

    if concurrency <= 1 or len(requests) <= 1:
        return [one(request) for request in requests]
    with ThreadPoolExecutor(min(concurrency, len(requests)), "provider-call") as pool:
        return list(pool.map(one, requests))
