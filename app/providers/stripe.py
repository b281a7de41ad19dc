"""Stripe adapter on the official SDK (`StripeClient`).

One PaymentIntent per payment, created with the idempotency key `<payment id>:intent`, and
one confirmation per attempt with the attempt's key `<payment id>:<attempt>`. A
PaymentIntent succeeds at most once, so even an attempt made after an answer Stripe never
gave (a 500 after the charge) cannot charge twice: it finds the intent already succeeded.
Creating an intent moves no money, so replaying the creation is also how `lookup` finds
what an attempt did. No `stripe.*` exception leaves this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import stripe
from stripe.params import (
    PaymentIntentConfirmParams,
    PaymentIntentCreateParams,
    RefundCreateParams,
)

from app.providers.base import (
    CardDetails,
    ChargeRequest,
    ChargeResult,
    RefundRequest,
    RefundResult,
    WebhookEvent,
    charge_each,
)
from app.providers.errors import (
    InvalidPaymentMethod,
    OutcomeUnknown,
    PaymentDeclined,
    ProviderError,
    ProviderMisconfigured,
    ProviderNotConfigured,
    ProviderRateLimited,
    ProviderUnavailable,
    ProviderUnreachable,
    RequestInFlight,
    WebhookRejected,
)
from app.providers.transport import never_sent, retry_after

#: Declines worth retrying later (dunning); every other decline code is hard.
SOFT_DECLINES = frozenset({
    "insufficient_funds", "try_again_later", "processing_error", "issuer_not_available",
    "approve_with_id", "reenter_transaction", "card_velocity_exceeded",
    "withdrawal_count_limit_exceeded",
})
WEBHOOK_TOLERANCE_SECONDS = 300
_SUCCEEDED = {"payment_intent.succeeded"}
_FAILED = {"payment_intent.payment_failed"}


@dataclass(frozen=True)
class StripeKeys:
    """One mode's secrets: the API secret key and the webhook endpoint's signing secret."""

    secret_key: str = field(repr=False)
    webhook_secret: str = field(default="", repr=False)


class StripeProvider:
    """A tenant's Stripe account(s): test and live keys, chosen by each request's mode."""

    name = "stripe"
    #: Idempotency keys are kept 24 hours (lookup searches by metadata, but a new
    #: PaymentIntent could be created past it if the search missed the first).
    idempotency_window: timedelta | None = timedelta(hours=24)

    def __init__(self, keys: Mapping[bool, StripeKeys], *, api_base: str = "",
                 timeout: float = 30.0, return_url: str = "", concurrency: int = 1) -> None:
        self._keys = dict(keys)
        self._return_url = return_url
        self._concurrency = concurrency
        self._clients = {
            livemode: stripe.StripeClient(
                k.secret_key,
                base_addresses={"api": api_base} if api_base else None,
                max_network_retries=0,  # retries are ours: same key, decided in one place
                http_client=stripe.RequestsClient(timeout=timeout),
            )
            for livemode, k in self._keys.items()
        }

    def describe(self, token: str, *, livemode: bool) -> CardDetails:
        client = self._client(livemode)
        if not token.startswith("pm_"):
            raise InvalidPaymentMethod("a Stripe token is a PaymentMethod id (pm_…)")
        try:
            with _mapped(money=False):
                method = client.v1.payment_methods.retrieve(token).to_dict()
        except PaymentDeclined as exc:
            raise InvalidPaymentMethod(f"stripe: {exc.message}") from exc
        card = method.get("card") or {}
        return CardDetails(brand=card.get("brand"), last4=card.get("last4"))

    def detach(self, token: str, *, livemode: bool) -> None:
        """Detach the PaymentMethod from its Stripe customer (it cannot be used again);
        one that is unknown or attached to no customer is left as it is."""
        client = self._client(livemode)
        try:
            with _mapped(money=False):
                client.v1.payment_methods.detach(token)
        except PaymentDeclined:  # resource_missing, payment_method_unexpected_state
            return

    def charge(self, request: ChargeRequest) -> ChargeResult:
        client = self._client(request.livemode)
        intent = self._intent(client, request)
        if intent["status"] not in ("requires_confirmation", "requires_payment_method"):
            return _result(intent)  # an earlier attempt already got this far
        params: PaymentIntentConfirmParams = {"payment_method": request.token}
        if request.off_session:
            params["off_session"] = True
        elif self._return_url:
            params["return_url"] = self._return_url
        try:
            with _mapped(money=True):
                intent = client.v1.payment_intents.confirm(
                    intent["id"], params, {"idempotency_key": request.idempotency_key}
                ).to_dict()
        except _UnexpectedState:
            intent = self._retrieve(client, intent["id"])
        return _result(intent)

    def charge_many(self, requests: Sequence[ChargeRequest]) -> list[ChargeResult | ProviderError]:
        return charge_each(self.charge, requests, self._concurrency)

    def lookup(self, request: ChargeRequest) -> ChargeResult | None:
        client = self._client(request.livemode)
        with _mapped(money=False):
            found = client.v1.payment_intents.search(
                {"query": f"metadata['payment_id']:'{request.payment_id}'", "limit": 1}
            ).to_dict()["data"]
        intent = found[0] if found else self._intent(client, request)
        if intent["status"] in ("succeeded", "requires_action"):
            return _result(intent)
        return None

    def cancel(self, request: ChargeRequest) -> ChargeResult | None:
        """Cancel the attempt's PaymentIntent; one that succeeded meanwhile is returned, one
        still processing raises OutcomeUnknown (ask again later)."""
        client = self._client(request.livemode)
        intent_id = request.reference
        if not intent_id:
            found = self.lookup(request)
            if found is None or found.status == "succeeded":
                return found
            intent_id = found.reference
        try:
            with _mapped(money=False):
                client.v1.payment_intents.cancel(intent_id)
            return None
        except _UnexpectedState:  # finished already: succeeded, canceled or processing
            intent = self._retrieve(client, intent_id)
        return None if intent["status"] == "canceled" else _result(intent)

    def refund(self, request: RefundRequest) -> RefundResult:
        client = self._client(request.livemode)
        params: RefundCreateParams = {
            "payment_intent": request.payment_reference,
            "amount": request.amount,
            "metadata": {"refund_id": request.refund_id},
        }
        with _mapped(money=True):
            refund = client.v1.refunds.create(params, {"idempotency_key": request.idempotency_key})
        return RefundResult(reference=refund.id)

    def lookup_refund(self, request: RefundRequest) -> RefundResult | None:
        """The PaymentIntent's refund whose metadata names our refund id, if any."""
        client = self._client(request.livemode)
        with _mapped(money=False):
            refunds = client.v1.refunds.list(
                {"payment_intent": request.payment_reference, "limit": 100}).to_dict()["data"]
        found = next((r for r in refunds
                      if (r.get("metadata") or {}).get("refund_id") == request.refund_id), None)
        return None if found is None else RefundResult(reference=str(found["id"]))

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], *, livemode: bool
    ) -> WebhookEvent:
        """Check `Stripe-Signature` with this mode's endpoint secret (5-minute tolerance)."""
        keys = self._keys.get(livemode)
        signature = headers.get("stripe-signature")
        if keys is None or not keys.webhook_secret:
            raise WebhookRejected("no Stripe webhook secret is configured for this mode")
        if not signature:
            raise WebhookRejected("the Stripe-Signature header is missing")
        try:
            stripe.Webhook.construct_event(
                body.decode("utf-8"), signature, keys.webhook_secret,
                tolerance=WEBHOOK_TOLERANCE_SECONDS,
            )
        except (stripe.SignatureVerificationError, ValueError, UnicodeDecodeError) as exc:
            raise WebhookRejected("the Stripe signature does not match") from exc
        return _event(json.loads(body), livemode)

    def _client(self, livemode: bool) -> stripe.StripeClient:
        client = self._clients.get(livemode)
        if client is None:
            mode = "live" if livemode else "test"
            raise ProviderNotConfigured(f"stripe: no {mode}-mode secret key for this tenant")
        return client

    def _intent(self, client: stripe.StripeClient, request: ChargeRequest) -> dict[str, Any]:
        """The payment's PaymentIntent, created once (creating one charges nothing)."""
        with _mapped(money=False):
            method = client.v1.payment_methods.retrieve(request.token).to_dict()
            params: PaymentIntentCreateParams = {
                "amount": request.amount,
                "currency": request.currency,
                "payment_method": request.token,
                "allowed_payment_method_types": ["card"],
                "metadata": {"payment_id": request.payment_id, "tenant_id": request.tenant_id},
            }
            if method.get("customer"):
                params["customer"] = method["customer"]
            if request.description:
                params["description"] = request.description[:1000]
            return client.v1.payment_intents.create(
                params, {"idempotency_key": f"{request.payment_id}:intent"}
            ).to_dict()

    @staticmethod
    def _retrieve(client: stripe.StripeClient, intent_id: str) -> dict[str, Any]:
        with _mapped(money=False):
            return client.v1.payment_intents.retrieve(intent_id).to_dict()


class _UnexpectedState(ProviderError):
    """Confirming an intent that is not waiting for confirmation (e.g. already succeeded)."""


def _result(intent: Mapping[str, Any]) -> ChargeResult:
    """Our view of a PaymentIntent's status, or the error it stands for."""
    status = intent["status"]
    if status == "succeeded":
        return ChargeResult(status="succeeded", reference=intent["id"])
    if status == "requires_action":
        action = intent.get("next_action") or {}
        url = (action.get("redirect_to_url") or {}).get("url")
        return ChargeResult(status="requires_action", reference=intent["id"], redirect_url=url)
    if status == "processing":
        raise OutcomeUnknown("stripe: the payment is still processing")
    failure = intent.get("last_payment_error")
    if status == "requires_payment_method" and failure:
        raise _declined(failure.get("decline_code") or failure.get("code"), failure.get("message"))
    if status == "canceled":
        raise PaymentDeclined("payment_intent_canceled", "The payment was canceled.", hard=True)
    raise ProviderError(f"stripe: unexpected PaymentIntent status {status}")


def _declined(code: str | None, message: str | None) -> PaymentDeclined:
    code = code or "card_declined"
    return PaymentDeclined(code, message or "The card was declined.",
                           hard=code not in SOFT_DECLINES)


@contextmanager
def _mapped(*, money: bool) -> Iterator[None]:
    """Turn Stripe's errors into ours; `money`: the call may have charged or refunded."""
    try:
        yield
    except stripe.CardError as exc:
        raise _declined(getattr(exc.error, "decline_code", None) or exc.code,
                        exc.user_message) from None
    except stripe.RateLimitError as exc:
        raise ProviderRateLimited("stripe: rate limited", retry_after(exc.headers)) from None
    except stripe.APIConnectionError as exc:
        if never_sent(exc):
            raise ProviderUnreachable("stripe: could not connect") from None
        if money:
            raise OutcomeUnknown("stripe: the connection failed after the request was sent"
                                 ) from None
        raise ProviderUnavailable("stripe: the connection failed") from None
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise ProviderMisconfigured(f"stripe rejected the credentials ({exc.http_status})"
                                    ) from None
    except stripe.IdempotencyError as exc:  # the key's first request differed: it may charge
        raise OutcomeUnknown(f"stripe: idempotency error: {exc.user_message}") from None
    except stripe.InvalidRequestError as exc:
        if exc.code == "payment_intent_unexpected_state":
            raise _UnexpectedState() from None
        if exc.code == "resource_missing":
            raise PaymentDeclined(exc.code, exc.user_message or "not found", hard=True) from None
        raise PaymentDeclined(exc.code or "invalid_request", exc.user_message or "invalid",
                              hard=True) from None
    except stripe.StripeError as exc:  # APIError (409, 5xx) and whatever Stripe adds later
        status = exc.http_status or 500
        if status == 409:  # a request with this key (or on this object) is still in flight
            raise RequestInFlight(f"stripe: conflict: {exc.user_message}") from None
        if status >= 500 and money:  # the charge may have been made before the error
            raise OutcomeUnknown(f"stripe: HTTP {status} on a call that moves money") from None
        if status >= 500:
            raise ProviderUnavailable(f"stripe: HTTP {status}") from None
        raise ProviderError(f"stripe: {type(exc).__name__} ({status})") from None


def _event(event: Mapping[str, Any], livemode: bool) -> WebhookEvent:
    obj = (event.get("data") or {}).get("object") or {}
    payment_id = str((obj.get("metadata") or {}).get("payment_id") or "")
    if bool(event.get("livemode")) != livemode:
        raise WebhookRejected("the event's mode does not match the payment's")
    kind = event.get("type")
    if kind in _SUCCEEDED and obj.get("status") == "succeeded":
        return WebhookEvent(id=str(event["id"]), payment_id=payment_id, livemode=livemode,
                            kind="succeeded", reference=str(obj["id"]),
                            amount=_int_or_none(obj.get("amount_received")),
                            currency=str(obj.get("currency") or ""), intent=str(obj["id"]))
    if kind in _FAILED:
        error = obj.get("last_payment_error") or {}
        declined = _declined(error.get("decline_code") or error.get("code"), error.get("message"))
        return WebhookEvent(id=str(event["id"]), payment_id=payment_id, livemode=livemode,
                            kind="failed", failure=(declined.code, declined.message, declined.hard))
    return WebhookEvent(id=str(event.get("id")), payment_id=payment_id, livemode=livemode,
                        kind="other")


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def payment_hint(body: bytes) -> str | None:
    """The payment id an (unverified) Stripe event claims to be about, to find its tenant."""
    try:
        event = json.loads(body)
        return str(event["data"]["object"]["metadata"]["payment_id"])
    except (ValueError, KeyError, TypeError):
        return None
