"""PayPal adapter on the official `paypal-server-sdk` (Orders v2, vaulted payment sources).

One order per payment (created with `PayPal-Request-Id: <payment id>:order`, our payment id
as `custom_id` and `invoice_id`), captured with the customer's vault id as payment source
and the attempt's key as `PayPal-Request-Id`. An order is captured at most once and PayPal
refuses a second completed payment with the same invoice id, so a retried attempt cannot
charge twice. Creating an order moves no money, so replaying the creation is how `lookup`
finds an attempt's order ("get order"), while PayPal keeps the request id (6 hours). A
capture whose answer was lost names its order (OutcomeUnknown.reference, kept on the
attempt), and `lookup` gets that order directly, however late. No SDK exception leaves
this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import requests
from apimatic_core.authentication.multiple.single_auth import Single
from apimatic_core.exceptions.auth_validation_exception import AuthValidationException
from apimatic_core.request_builder import RequestBuilder
from apimatic_core.response_handler import ResponseHandler
from apimatic_core.types.parameter import Parameter
from paypalserversdk.api_helper import APIHelper
from paypalserversdk.configuration import Configuration, Environment, Server
from paypalserversdk.controllers.base_controller import BaseController
from paypalserversdk.exceptions.api_exception import ApiException
from paypalserversdk.exceptions.error_exception import ErrorException
from paypalserversdk.http.auth.o_auth_2 import ClientCredentialsAuthCredentials
from paypalserversdk.http.http_method_enum import HttpMethodEnum
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient

from app.billing.money import CURRENCY_EXPONENTS
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

#: Refusals worth retrying later (dunning); every other issue is a hard decline.
SOFT_ISSUES = frozenset({"INSTRUMENT_DECLINED", "MAX_NUMBER_OF_PAYMENT_ATTEMPTS_EXCEEDED"})
WEBHOOK_HEADERS = {  # verify-webhook-signature field -> (lower-cased) delivery header
    "auth_algo": "paypal-auth-algo",
    "cert_url": "paypal-cert-url",
    "transmission_id": "paypal-transmission-id",
    "transmission_sig": "paypal-transmission-sig",
    "transmission_time": "paypal-transmission-time",
}
_ACTION_LINKS = ("payer-action", "approve")
#: Refusals that mean "the request with this PayPal-Request-Id is still in progress".
_IN_FLIGHT = frozenset({"PREVIOUS_REQUEST_IN_PROGRESS", "RESOURCE_CONFLICT"})


@dataclass(frozen=True)
class PayPalKeys:
    """One mode's REST app credentials and the id of its webhook (for signature checks)."""

    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    webhook_id: str = field(default="", repr=False)


class _Configuration(Configuration):  # type: ignore[misc]
    """The SDK's configuration with an overridable base URI (a simulator, a proxy)."""

    def __init__(self, base_uri: str, **kwargs: Any) -> None:
        self._base_uri = base_uri
        super().__init__(**kwargs)

    def get_base_uri(self, server: Server = Server.DEFAULT) -> str:
        if self._base_uri:
            return self._base_uri
        base: str = super().get_base_uri(server)
        return base


class _Notifications(BaseController):  # type: ignore[misc]
    """The one endpoint the SDK lacks: POST /v1/notifications/verify-webhook-signature."""

    def verify_webhook_signature(self, body: dict[str, Any]) -> Any:
        return (
            super()
            .new_api_call_builder.request(
                RequestBuilder()
                .server(Server.DEFAULT)
                .path("/v1/notifications/verify-webhook-signature")
                .http_method(HttpMethodEnum.POST)
                .header_param(Parameter().key("Content-Type").value("application/json"))
                .body_param(Parameter().value(body))
                .header_param(Parameter().key("accept").value("application/json"))
                .body_serializer(APIHelper.json_serialize)
                .auth(Single("Oauth2"))
            )
            .response(
                ResponseHandler()
                .deserializer(APIHelper.json_deserialize)
                .is_api_response(True)
                .local_error("default", "The error response.", ErrorException)
            )
            .execute()
        )


@dataclass
class _Account:
    client: PaypalServersdkClient
    notifications: _Notifications
    keys: PayPalKeys


class PayPalProvider:
    """A tenant's PayPal REST apps: sandbox and live, chosen by each request's mode."""

    name = "paypal"
    #: PayPal-Request-Id is kept 6 hours: after that, creating the order again makes a new one.
    idempotency_window: timedelta | None = timedelta(hours=6)

    def __init__(self, keys: Mapping[bool, PayPalKeys], *, api_base: str = "",
                 timeout: float = 30.0, concurrency: int = 1) -> None:
        self._concurrency = concurrency
        self._accounts = {livemode: _account(k, livemode, api_base, timeout)
                          for livemode, k in keys.items()}

    def describe(self, token: str, *, livemode: bool) -> CardDetails:
        account = self._account(livemode)
        try:
            with _mapped(money=False):
                found = _body(account.client.vault.get_payment_token(token))
        except PaymentDeclined as exc:
            raise InvalidPaymentMethod(f"paypal: {exc.message}") from exc
        source = found.get("payment_source") or {}
        card = source.get("card")
        if card:
            return CardDetails(brand=str(card.get("brand", "card")).lower(),
                               last4=card.get("last_digits"))
        return CardDetails(brand="paypal", last4=None)

    def detach(self, token: str, *, livemode: bool) -> None:
        """Delete the vaulted payment token; one PayPal does not know is already gone."""
        account = self._account(livemode)
        try:
            with _mapped(money=False):
                account.client.vault.delete_payment_token(token)
        except PaymentDeclined:  # 404 RESOURCE_NOT_FOUND or a 4xx refusal of an unknown id
            return

    def charge_many(self, requests: Sequence[ChargeRequest]) -> list[ChargeResult | ProviderError]:
        return charge_each(self.charge, requests, self._concurrency)

    def charge(self, request: ChargeRequest) -> ChargeResult:
        account = self._account(request.livemode)
        order = self._order(account, request)
        status = order["status"]
        if status in ("COMPLETED", "PAYER_ACTION_REQUIRED"):
            return _result(order)  # an earlier attempt captured it, or the buyer must act
        body: dict[str, Any] = {}
        if status != "APPROVED":
            body["payment_source"] = {"paypal": {
                "vault_id": request.token,
                "stored_credential": {
                    "payment_initiator": "MERCHANT" if request.off_session else "CUSTOMER",
                    "usage": "SUBSEQUENT",
                    "usage_pattern": "SUBSCRIPTION_PREPAID" if request.off_session
                    else "IMMEDIATE",
                },
            }}
        try:
            with _mapped(money=True):
                captured = _body(account.client.orders.capture_order({
                    "id": order["id"], "body": body, "prefer": "return=representation",
                    "paypal_request_id": request.idempotency_key,
                }))
        except _Issue as issue:
            return self._after_issue(account, order["id"], issue)
        except OutcomeUnknown as lost:  # kept on the attempt: lookups find the order for good
            raise OutcomeUnknown(str(lost), reference=order["id"]) from None
        return _result(captured)

    def lookup(self, request: ChargeRequest) -> ChargeResult | None:
        account = self._account(request.livemode)
        # The order id, once known, finds the capture for good; replaying the creation
        # finds it only while PayPal keeps the PayPal-Request-Id (6 hours).
        order = self._get(account, request.reference) if request.reference else \
            self._order(account, request)
        captured = any(c.get("status") == "COMPLETED" for c in _captures(order))
        if captured or order["status"] == "PAYER_ACTION_REQUIRED":
            return _result(order)
        return None  # nothing taken: re-sending the attempt's key tells the rest

    def cancel(self, request: ChargeRequest) -> ChargeResult | None:
        """Money moves only when we capture: an order waiting for its buyer is left to expire
        at PayPal (an approval after this is never captured); a capture is found."""
        found = self.lookup(request)
        return found if found is not None and found.status == "succeeded" else None

    def refund(self, request: RefundRequest) -> RefundResult:
        account = self._account(request.livemode)
        amount = {"value": _decimal(request.amount, request.currency),
                  "currency_code": request.currency.upper()}
        try:
            with _mapped(money=True):
                refund = _body(account.client.payments.refund_captured_payment({
                    "capture_id": request.payment_reference,
                    "body": {"amount": amount, "custom_id": request.refund_id},
                    "paypal_request_id": request.idempotency_key,
                    "prefer": "return=representation",
                }))
        except _Issue as issue:
            raise PaymentDeclined(issue.code, issue.message, hard=True) from None
        return RefundResult(reference=str(refund["id"]))

    def lookup_refund(self, request: RefundRequest) -> RefundResult | None:
        """The refund of the capture's order whose custom_id is our refund id, if any."""
        account = self._account(request.livemode)
        with _mapped(money=False):
            capture = _body(account.client.payments.get_captured_payment(
                {"capture_id": request.payment_reference}))
        order_id = ((capture.get("supplementary_data") or {}).get("related_ids") or {}).get(
            "order_id")
        if not order_id:
            raise OutcomeUnknown("paypal: the capture names no order to look its refunds up")
        units = self._get(account, str(order_id)).get("purchase_units") or [{}]
        refunds = (units[0].get("payments") or {}).get("refunds") or []
        found = next((r for r in refunds if r.get("custom_id") == request.refund_id), None)
        return None if found is None else RefundResult(reference=str(found["id"]))

    def verify_webhook(
        self, body: bytes, headers: Mapping[str, str], *, livemode: bool
    ) -> WebhookEvent:
        """Ask PayPal whether this delivery is genuine (verify-webhook-signature)."""
        account = self._account(livemode)
        if not account.keys.webhook_id:
            raise WebhookRejected("no PayPal webhook id is configured for this mode")
        fields = {name: headers.get(header) for name, header in WEBHOOK_HEADERS.items()}
        if not all(fields.values()):
            raise WebhookRejected("PayPal's signature headers are missing")
        try:
            event = json.loads(body)
        except ValueError as exc:
            raise WebhookRejected("the body is not JSON") from exc
        request = {**fields, "webhook_id": account.keys.webhook_id, "webhook_event": event}
        try:
            with _mapped(money=False):
                answer = _body(account.notifications.verify_webhook_signature(request))
        except _Issue as issue:
            raise WebhookRejected(f"paypal refused to verify: {issue.issue}") from None
        if answer.get("verification_status") != "SUCCESS":
            raise WebhookRejected("PayPal says the signature does not match")
        return _event(event, livemode)

    def _account(self, livemode: bool) -> _Account:
        account = self._accounts.get(livemode)
        if account is None:
            mode = "live" if livemode else "sandbox"
            raise ProviderNotConfigured(f"paypal: no {mode} credentials for this tenant")
        return account

    def _order(self, account: _Account, request: ChargeRequest) -> dict[str, Any]:
        """The payment's order as it is now, created once (creating one charges nothing)."""
        unit: dict[str, Any] = {
            "reference_id": request.payment_id,
            "custom_id": request.payment_id,
            "invoice_id": request.payment_id,
            "amount": {"currency_code": request.currency.upper(),
                       "value": _decimal(request.amount, request.currency)},
        }
        if request.description:
            unit["description"] = request.description[:127]
        with _mapped(money=False):
            created = account.client.orders.create_order({
                "body": {"intent": "CAPTURE", "purchase_units": [unit]},
                "paypal_request_id": f"{request.payment_id}:order",
                "prefer": "return=representation",
            })
            order = _body(created)
            if created.status_code != 201:  # a replay shows the order as it was then
                order = _body(account.client.orders.get_order({"id": order["id"]}))
        return order

    def _after_issue(self, account: _Account, order_id: str, issue: _Issue) -> ChargeResult:
        if issue.issue == "PAYER_ACTION_REQUIRED":
            url = _link(issue.links) or _link(self._get(account, order_id).get("links", []))
            return ChargeResult(status="requires_action", reference=order_id, redirect_url=url)
        if issue.issue == "ORDER_ALREADY_CAPTURED":
            return _result(self._get(account, order_id))
        if issue.issue == "DUPLICATE_INVOICE_ID":
            # Another order of this payment was captured: it was charged, not declined. Only
            # a re-send past the 6 hours PayPal keeps the request id gets here (a worker
            # that died mid-capture, and nothing ran for that long): a person must look.
            raise OutcomeUnknown("paypal: this payment's invoice id was captured already")
        raise issue

    @staticmethod
    def _get(account: _Account, order_id: str) -> dict[str, Any]:
        with _mapped(money=False):
            return _body(account.client.orders.get_order({"id": order_id}))


class _Issue(PaymentDeclined):
    """A 4xx answer with PayPal's first `details[].issue` (e.g. INSTRUMENT_DECLINED)."""

    def __init__(self, issue: str, message: str, links: list[dict[str, Any]]) -> None:
        super().__init__(issue.lower(), message, hard=issue not in SOFT_ISSUES)
        self.issue, self.links = issue, links


def _account(keys: PayPalKeys, livemode: bool, api_base: str, timeout: float) -> _Account:
    config = _Configuration(
        api_base,
        timeout=timeout,
        max_retries=0,  # retries are ours: same request id, decided in one place
        environment=Environment.PRODUCTION if livemode else Environment.SANDBOX,
        client_credentials_auth_credentials=ClientCredentialsAuthCredentials(
            o_auth_client_id=keys.client_id, o_auth_client_secret=keys.client_secret
        ),
    )
    client = PaypalServersdkClient(config=config)
    return _Account(client, _Notifications(client.global_configuration), keys)


#: Currencies PayPal takes in whole units only, though ISO 4217 gives them two decimals.
_WHOLE_UNITS_ONLY = frozenset({"huf", "twd"})


def _decimal(amount: int, currency: str) -> str:
    """Minor units as PayPal's decimal string: 1999 usd → "19.99", 500 jpy → "500",
    1000 huf → "10"; an amount PayPal cannot take (1050 huf) is declined before any call."""
    exponent = CURRENCY_EXPONENTS.get(currency, 2)
    whole, minor = divmod(amount, 10**exponent)
    if currency in _WHOLE_UNITS_ONLY:
        if minor:
            raise PaymentDeclined(
                "amount_not_supported",
                f"PayPal takes {currency.upper()} in whole units only: {amount} minor units "
                "is not a whole amount.",
                hard=True,
            )
        return str(whole)
    return f"{whole}.{minor:0{exponent}d}" if exponent else str(whole)


def _minor(value: Any, currency: str) -> int | None:
    """PayPal's decimal string as minor units ("19.99" usd → 1999); None if it is not one."""
    try:
        minor = Decimal(str(value)).scaleb(CURRENCY_EXPONENTS.get(currency, 2))
    except ArithmeticError:
        return None
    return int(minor) if minor.is_finite() and minor == minor.to_integral_value() else None


def _body(response: Any) -> dict[str, Any]:
    text = getattr(response, "text", None) or "{}"
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def _link(links: list[dict[str, Any]]) -> str | None:
    for rel in _ACTION_LINKS:
        for link in links or []:
            if link.get("rel") == rel:
                return str(link.get("href"))
    return None


def _captures(order: Mapping[str, Any]) -> list[dict[str, Any]]:
    units = order.get("purchase_units") or [{}]
    return list(((units[0].get("payments") or {}).get("captures")) or [])


def _result(order: Mapping[str, Any]) -> ChargeResult:
    """Our view of an order's status, or the error it stands for."""
    status = order.get("status")
    captures = _captures(order)
    done = next((c for c in captures if c.get("status") == "COMPLETED"), None)
    if done is not None:
        return ChargeResult(status="succeeded", reference=str(done["id"]))
    if status == "PAYER_ACTION_REQUIRED":
        return ChargeResult(status="requires_action", reference=str(order["id"]),
                            redirect_url=_link(order.get("links") or []))
    if any(c.get("status") == "PENDING" for c in captures):
        raise OutcomeUnknown("paypal: the capture is pending", reference=str(order["id"]))
    if any(c.get("status") in ("DECLINED", "FAILED") for c in captures):
        raise PaymentDeclined("capture_declined", "PayPal declined the capture.", hard=False)
    raise ProviderError(f"paypal: unexpected order status {status}")


@contextmanager
def _mapped(*, money: bool) -> Iterator[None]:
    """Turn the SDK's errors into ours; `money`: the call may have captured or refunded."""
    try:
        yield
    except ApiException as exc:
        raise _from_status(exc, money=money) from None
    except AuthValidationException:
        raise ProviderMisconfigured("paypal rejected the credentials") from None
    except requests.RequestException as exc:
        if never_sent(exc):
            raise ProviderUnreachable("paypal: could not connect") from None
        if money:
            raise OutcomeUnknown("paypal: the connection failed after the request was sent"
                                 ) from None
        raise ProviderUnavailable("paypal: the connection failed") from None


def _from_status(exc: ApiException, *, money: bool) -> Exception:
    status = exc.response_code
    if status == 429:
        return ProviderRateLimited("paypal: rate limited", retry_after(exc.response.headers))
    if status >= 500 and money:  # the capture or refund may have been made before the error
        return OutcomeUnknown(f"paypal: HTTP {status} on a call that moves money")
    if status >= 500:
        return ProviderUnavailable(f"paypal: HTTP {status}")
    if status in (401, 403):
        return ProviderMisconfigured(f"paypal rejected the credentials ({status})")
    try:
        body = json.loads(exc.response.text or "{}")
    except ValueError:
        body = {}
    details = body.get("details") or [{}]
    code = details[0].get("issue") or body.get("name") or f"HTTP_{status}"
    message = details[0].get("description") or body.get("message") or "PayPal refused."
    if status == 404:
        return PaymentDeclined(code.lower(), message, hard=True)
    if status == 409 or code in _IN_FLIGHT:  # a request with this id is still being processed
        return RequestInFlight(f"paypal: {code}: {message}")
    return _Issue(code, message, body.get("links") or [])


def _event(event: Mapping[str, Any], livemode: bool) -> WebhookEvent:
    kind = event.get("event_type")
    resource = event.get("resource") or {}
    event_id = str(event.get("id"))
    payment_id = _resource_payment(resource)
    if kind == "PAYMENT.CAPTURE.COMPLETED":
        amount = resource.get("amount") or {}
        currency = str(amount.get("currency_code") or "").lower()
        related = (resource.get("supplementary_data") or {}).get("related_ids") or {}
        return WebhookEvent(id=event_id, payment_id=payment_id, livemode=livemode,
                            kind="succeeded", reference=str(resource.get("id")),
                            amount=_minor(amount.get("value"), currency), currency=currency,
                            intent=str(related.get("order_id") or "") or None)
    if kind in ("PAYMENT.CAPTURE.DECLINED", "PAYMENT.CAPTURE.DENIED"):
        return WebhookEvent(id=event_id, payment_id=payment_id, livemode=livemode,
                            kind="failed", failure=("capture_declined",
                                                    "PayPal declined the capture.", False))
    if kind == "CHECKOUT.ORDER.APPROVED":
        return WebhookEvent(id=event_id, payment_id=payment_id, livemode=livemode,
                            kind="approved", reference=str(resource.get("id")))
    return WebhookEvent(id=event_id, payment_id=payment_id, livemode=livemode, kind="other")


def _resource_payment(resource: Mapping[str, Any]) -> str:
    if resource.get("custom_id"):
        return str(resource["custom_id"])
    units = resource.get("purchase_units") or [{}]
    return str(units[0].get("custom_id") or "")


def payment_hint(body: bytes) -> str | None:
    """The payment id an (unverified) PayPal event claims to be about, to find its tenant."""
    try:
        return _resource_payment(json.loads(body).get("resource") or {}) or None
    except (ValueError, AttributeError, TypeError):
        return None
