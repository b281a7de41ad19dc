"""A local PayPal: the REST endpoints our adapter uses, in PayPal's wire format.

OAuth2 client credentials (`/v1/oauth2/token`, Basic auth, form body), JSON everywhere
else with Bearer tokens, `{"name", "message", "debug_id", "details": [{"issue"}]}` error
envelopes, `PayPal-Request-Id` idempotency (the first answer is replayed; the same id on
another request is `PAYPAL_REQUEST_ID_PREVIOUSLY_USED`), Orders v2 created then captured
with a vaulted payment source, refunds of captures, vault tokens, and
`/v1/notifications/verify-webhook-signature` for the webhooks it sends.

Magic vault ids decide each capture: `vault_ok`, `vault_declined` (INSTRUMENT_DECLINED),
`vault_refused` (TRANSACTION_REFUSED), `vault_action` (PAYER_ACTION_REQUIRED until the
buyer approves). The ledger (`captures`) proves "charged once".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from tests.sim.server import Reply, Seen, SimServer

VAULT: dict[str, str | None] = {
    "vault_ok": None,
    "vault_declined": "INSTRUMENT_DECLINED",
    "vault_refused": "TRANSACTION_REFUSED",
    "vault_action": "PAYER_ACTION",
}
_ISSUES = {
    "INSTRUMENT_DECLINED": "The instrument presented was either declined by the processor or "
                           "bank, or it can't be used for this payment.",
    "TRANSACTION_REFUSED": "The request was refused.",
    "PAYER_ACTION_REQUIRED": "Transaction cannot complete successfully, instruct the buyer to "
                             "return to PayPal.",
    "ORDER_ALREADY_CAPTURED": "Order already captured. If 'intent=CAPTURE' only one capture "
                              "per order is allowed.",
    "ORDER_NOT_APPROVED": "Payer has not yet approved the Order for payment.",
    "DUPLICATE_INVOICE_ID": "Duplicate Invoice ID detected.",
    "PREVIOUS_REQUEST_IN_PROGRESS": "A previous request on this resource is currently in "
                                    "progress. Please wait for some time and try again.",
    "PAYPAL_REQUEST_ID_PREVIOUSLY_USED": "The PayPal-Request-Id has already been used for "
                                         "another request.",
    "REFUND_AMOUNT_EXCEEDED": "The refund amount must be less than or equal to the capture "
                              "amount that has not yet been refunded.",
    "INVALID_RESOURCE_ID": "Specified resource ID does not exist.",
}
WEB = "https://www.sandbox.paypal.com"


def _pp_id(length: int = 17) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


#: Currencies PayPal takes without decimals (ISO 4217 gives HUF and TWD two).
WHOLE_UNITS_ONLY = frozenset({"HUF", "JPY", "TWD"})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def problem(status: int, name: str, message: str, issue: str | None = None,
            links: list[dict[str, str]] | None = None) -> Reply:
    """A PayPal error envelope."""
    body: dict[str, Any] = {"name": name, "message": message, "debug_id": secrets.token_hex(6)}
    if issue is not None:
        body["details"] = [{"issue": issue, "description": _ISSUES.get(issue, issue)}]
    body["links"] = links or [{"href": "https://developer.paypal.com/api/rest/reference/"
                                       "orders/v2/errors/", "rel": "information_link",
                               "method": "GET"}]
    return Reply(status, body, {"Paypal-Debug-Id": body["debug_id"]})


def unprocessable(issue: str, links: list[dict[str, str]] | None = None) -> Reply:
    return problem(422, "UNPROCESSABLE_ENTITY", "The requested action could not be performed, "
                   "semantically incorrect, or failed business validation.", issue, links)


@dataclass
class _Stored:
    path: str
    body: Any
    reply: Reply


class PayPalSim(SimServer):
    """The PayPal REST subset: OAuth, vault tokens, orders, captures, refunds, webhooks."""

    def __init__(self) -> None:
        super().__init__()
        self.clients: dict[str, tuple[str, bool]] = {}  # client id -> (secret, livemode)
        self.tokens: dict[str, str] = {}  # access token -> client id
        self.webhooks: dict[str, str] = {}  # webhook id -> client id
        self.orders: dict[str, dict[str, Any]] = {}
        self.captures: list[dict[str, Any]] = []
        self.refunds: list[dict[str, Any]] = []
        self._transmissions: dict[str, tuple[int, Any]] = {}  # id -> (crc32 of body, event)
        self._signing_key = secrets.token_bytes(32)
        self._idempotency: dict[tuple[str, str], _Stored] = {}
        self.deleted_tokens: set[tuple[str, str]] = set()  # (client id, vault id)

    # -- test helpers --------------------------------------------------------------------

    def new_client(self, *, livemode: bool = False) -> tuple[str, str]:
        """A REST app's (client id, secret), and its webhook is created by `new_webhook`."""
        client_id, secret = "A" + secrets.token_hex(20), "E" + secrets.token_hex(20)
        with self.lock:
            self.clients[client_id] = (secret, livemode)
        return client_id, secret

    def new_webhook(self, client_id: str) -> str:
        webhook_id = "WH-" + _pp_id(24)
        with self.lock:
            self.webhooks[webhook_id] = client_id
        return webhook_id

    def charges_for(self, payment_id: str) -> list[dict[str, Any]]:
        """Completed captures whose custom_id is our payment id."""
        with self.lock:
            return [c for c in self.captures
                    if c["custom_id"] == payment_id and c["status"] == "COMPLETED"]

    def order_for(self, payment_id: str) -> dict[str, Any]:
        with self.lock:
            return next(o for o in self.orders.values()
                        if o["purchase_units"][0].get("custom_id") == payment_id)

    def approve(self, order_id: str) -> dict[str, Any]:
        """The buyer approves at PayPal; returns the CHECKOUT.ORDER.APPROVED resource."""
        with self.lock:
            order = self.orders[order_id]
            assert order["status"] == "PAYER_ACTION_REQUIRED", order["status"]
            order["status"] = "APPROVED"
            return _public(order)

    def deliver(self, webhook_id: str, event_type: str, resource: dict[str, Any]
                ) -> tuple[dict[str, str], bytes]:
        """A webhook delivery PayPal would POST: its signed headers and its body."""
        event = {
            "id": "WH-" + _pp_id(17), "event_version": "1.0", "create_time": _now(),
            "resource_type": "capture" if event_type.startswith("PAYMENT.") else "checkout-order",
            "resource_version": "2.0", "event_type": event_type,
            "summary": f"{event_type} notification", "resource": resource, "links": [],
        }
        body = json.dumps(event).encode()
        transmission, stamp = str(uuid.uuid4()), _now()
        crc = zlib.crc32(body)
        with self.lock:
            self._transmissions[transmission] = (crc, json.loads(body))
        headers = {
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            "PAYPAL-CERT-URL": f"{self.url}/v1/notifications/certs/CERT-360caa42-fca2a594",
            "PAYPAL-TRANSMISSION-ID": transmission,
            "PAYPAL-TRANSMISSION-SIG": self._signature(transmission, stamp, webhook_id, crc),
            "PAYPAL-TRANSMISSION-TIME": stamp,
        }
        return headers, body

    def forget_request_ids(self) -> None:
        """What 6 hours do at PayPal: every PayPal-Request-Id is forgotten (orders stay)."""
        with self.lock:
            self._idempotency.clear()

    def capture_of(self, payment_id: str) -> dict[str, Any]:
        return self.charges_for(payment_id)[0]

    def _signature(self, transmission: str, stamp: str, webhook_id: str, crc: int) -> str:
        message = f"{transmission}|{stamp}|{webhook_id}|{crc}".encode()
        return base64.b64encode(hmac.new(self._signing_key, message, hashlib.sha256).digest()
                                ).decode()

    # -- the HTTP API --------------------------------------------------------------------

    def error_reply(self, status: int) -> Reply:
        if status == 429:
            return problem(429, "RATE_LIMIT_REACHED",
                           "Too many requests. Blocked due to rate limiting.")
        return problem(status, "INTERNAL_SERVER_ERROR", "An internal server error occurred.")

    def flight_key(self, seen: Seen) -> str | None:
        request_id = seen.headers.get("paypal-request-id")
        return request_id if seen.method == "POST" and request_id else None

    def conflict_reply(self) -> Reply:
        return problem(409, "RESOURCE_CONFLICT", "The server has detected a conflict while "
                       "processing this request.", "PREVIOUS_REQUEST_IN_PROGRESS")

    def handle(self, seen: Seen) -> Reply:
        if seen.method == "POST" and seen.path == "/v1/oauth2/token":
            return self._token(seen)
        auth = seen.headers.get("authorization", "")
        client_id = self.tokens.get(auth.removeprefix("Bearer ").strip())
        if client_id is None:
            return problem(401, "AUTHENTICATION_FAILURE", "Authentication failed due to invalid "
                           "authentication credentials or a missing Authorization header.")
        try:
            body = json.loads(seen.body) if seen.body else {}
        except ValueError:
            return problem(400, "INVALID_REQUEST", "Request is not well-formed, syntactically "
                           "incorrect, or violates schema.", "MALFORMED_REQUEST_JSON")
        request_id = seen.headers.get("paypal-request-id")
        if seen.method != "POST" or not request_id:
            return self._route(client_id, seen, body)
        slot = (client_id, request_id)
        stored = self._idempotency.get(slot)
        if stored is not None:
            if (stored.path, stored.body) != (seen.path, body):
                return unprocessable("PAYPAL_REQUEST_ID_PREVIOUSLY_USED")
            status = 200 if stored.reply.status == 201 else stored.reply.status
            return Reply(status, stored.reply.body, dict(stored.reply.headers))
        reply = self._route(client_id, seen, body)
        if reply.status not in (400, 401):
            self._idempotency[slot] = _Stored(seen.path, body, reply)
        return reply

    def _token(self, seen: Seen) -> Reply:
        scheme, _, encoded = seen.headers.get("authorization", "").partition(" ")
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            client_id, secret = "", ""
        form = dict(parse_qsl(seen.body.decode()))
        known = self.clients.get(client_id)
        if scheme != "Basic" or known is None or known[0] != secret:
            return Reply(401, {"error": "invalid_client",
                               "error_description": "Client Authentication failed"})
        if form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type",
                               "error_description": "Grant Type is NULL"})
        token = "A21AA" + secrets.token_urlsafe(40)
        self.tokens[token] = client_id
        return Reply(200, {"scope": "https://uri.paypal.com/services/payments/payment",
                           "access_token": token, "token_type": "Bearer",
                           "app_id": "APP-80W284485P519543T", "expires_in": 32400,
                           "nonce": f"{_now()}{secrets.token_hex(8)}"})

    def _route(self, client_id: str, seen: Seen, body: Any) -> Reply:
        parts = seen.path.rstrip("/").split("/")[1:]
        method = seen.method
        if parts[:3] == ["v3", "vault", "payment-tokens"] and len(parts) == 4:
            if parts[3] not in VAULT or (client_id, parts[3]) in self.deleted_tokens:
                return problem(404, "RESOURCE_NOT_FOUND", "The specified resource does not "
                               "exist.", "INVALID_RESOURCE_ID")
            if method == "DELETE":
                self.deleted_tokens.add((client_id, parts[3]))
                return Reply(204, None)
            if method == "GET":
                return self._vault_token(parts[3])
        if method == "POST" and parts == ["v2", "checkout", "orders"]:
            return self._create_order(client_id, body, seen.headers.get("prefer", ""))
        if parts[:3] == ["v2", "checkout", "orders"] and len(parts) >= 4:
            order = self.orders.get(parts[3])
            if order is None or order["_client"] != client_id:
                return problem(404, "RESOURCE_NOT_FOUND", "The specified resource does not "
                               "exist.", "INVALID_RESOURCE_ID")
            if method == "GET" and len(parts) == 4:
                return Reply(200, _public(order))
            if method == "POST" and parts[4:] == ["capture"]:
                return self._capture(client_id, order, body)
        if method == "POST" and parts[:3] == ["v2", "payments", "captures"] and \
                parts[4:] == ["refund"]:
            return self._refund(client_id, parts[3], body)
        if method == "GET" and parts[:3] == ["v2", "payments", "captures"] and len(parts) == 4:
            capture = self._capture_of(client_id, parts[3])
            return Reply(200, _public(capture)) if capture else problem(
                404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.",
                "INVALID_RESOURCE_ID")
        if method == "POST" and parts == ["v1", "notifications", "verify-webhook-signature"]:
            return self._verify(client_id, body)
        return problem(404, "NOT_FOUND", "The specified resource does not exist.")

    def _vault_token(self, token: str) -> Reply:
        return Reply(200, {
            "id": token, "customer": {"id": "customer_" + token},
            "payment_source": {"paypal": {"email_address": f"{token}@example.com",
                                          "account_id": _pp_id(13), "usage_type": "MERCHANT",
                                          "customer_type": "CONSUMER"}},
            "links": [{"href": f"{self.url}/v3/vault/payment-tokens/{token}", "rel": "self",
                       "method": "GET"}],
        })

    def _create_order(self, client_id: str, body: dict[str, Any], prefer: str) -> Reply:
        units = body.get("purchase_units") or []
        amount = units[0].get("amount", {}) if units else {}
        if body.get("intent") not in ("CAPTURE", "AUTHORIZE") or not amount.get("value") \
                or not amount.get("currency_code"):
            return problem(400, "INVALID_REQUEST", "Request is not well-formed, syntactically "
                           "incorrect, or violates schema.", "MISSING_REQUIRED_PARAMETER")
        if amount["currency_code"] in WHOLE_UNITS_ONLY and "." in str(amount["value"]):
            return unprocessable("DECIMAL_PRECISION")
        order_id = _pp_id()
        order = {
            "id": order_id, "intent": body["intent"], "status": "CREATED",
            "purchase_units": [{**unit, "reference_id": unit.get("reference_id", "default")}
                               for unit in units],
            "create_time": _now(), "_client": client_id,
            "links": [
                {"href": f"{self.url}/v2/checkout/orders/{order_id}", "rel": "self",
                 "method": "GET"},
                {"href": f"{WEB}/checkoutnow?token={order_id}", "rel": "approve",
                 "method": "GET"},
                {"href": f"{self.url}/v2/checkout/orders/{order_id}/capture", "rel": "capture",
                 "method": "POST"},
            ],
        }
        self.orders[order_id] = order
        if "return=representation" in prefer:
            return Reply(201, _public(order))
        return Reply(201, {"id": order_id, "status": "CREATED", "links": order["links"]})

    def _capture(self, client_id: str, order: dict[str, Any], body: dict[str, Any]) -> Reply:
        if order["status"] == "COMPLETED":
            return unprocessable("ORDER_ALREADY_CAPTURED")
        vault_id = ((body.get("payment_source") or {}).get("paypal") or {}).get("vault_id")
        if order["status"] != "APPROVED":
            if vault_id is None:
                return unprocessable("ORDER_NOT_APPROVED")
            initiator = body["payment_source"]["paypal"].get("stored_credential", {}).get(
                "payment_initiator")
            if initiator not in (None, "CUSTOMER", "MERCHANT"):
                return problem(400, "INVALID_REQUEST", "Request is not well-formed.",
                               "INVALID_PARAMETER_VALUE")
            if vault_id not in VAULT or (client_id, vault_id) in self.deleted_tokens:
                return unprocessable("INVALID_RESOURCE_ID")
            outcome = VAULT[vault_id]
            if outcome == "PAYER_ACTION":
                order["status"] = "PAYER_ACTION_REQUIRED"
                link = {"href": f"{WEB}/checkoutnow?token={order['id']}", "rel": "payer-action",
                        "method": "GET"}
                order["links"] = [*order["links"], link]
                return unprocessable("PAYER_ACTION_REQUIRED", [link])
            if outcome is not None:
                return unprocessable(outcome)
        unit = order["purchase_units"][0]
        invoice = unit.get("invoice_id")
        if invoice and any(c["invoice_id"] == invoice and c["_client"] == client_id
                           and c["status"] == "COMPLETED" for c in self.captures):
            return unprocessable("DUPLICATE_INVOICE_ID")
        capture = {
            "id": _pp_id(), "status": "COMPLETED", "amount": dict(unit["amount"]),
            "final_capture": True, "custom_id": unit.get("custom_id"), "invoice_id": invoice,
            "seller_protection": {"status": "ELIGIBLE"}, "create_time": _now(),
            "update_time": _now(), "supplementary_data": {"related_ids": {"order_id": order["id"]}},
            "_client": client_id, "_refunded": 0,
        }
        capture["links"] = [
            {"href": f"{self.url}/v2/payments/captures/{capture['id']}", "rel": "self",
             "method": "GET"},
            {"href": f"{self.url}/v2/payments/captures/{capture['id']}/refund", "rel": "refund",
             "method": "POST"},
        ]
        self.captures.append(capture)
        order["status"] = "COMPLETED"
        unit["payments"] = {"captures": [_public(capture)]}
        order["payment_source"] = {"paypal": {"email_address": f"{vault_id}@example.com",
                                              "attributes": {"vault": {"id": vault_id,
                                                                       "status": "VAULTED"}}}}
        return Reply(201, _public(order))

    def _capture_of(self, client_id: str, capture_id: str) -> dict[str, Any] | None:
        return next((c for c in self.captures
                     if c["id"] == capture_id and c["_client"] == client_id), None)

    def _refund(self, client_id: str, capture_id: str, body: dict[str, Any]) -> Reply:
        capture = self._capture_of(client_id, capture_id)
        if capture is None:
            return problem(404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.",
                           "INVALID_RESOURCE_ID")
        cents = _cents(capture["amount"]["value"])
        wanted = _cents(body["amount"]["value"]) if body.get("amount") else cents - capture[
            "_refunded"]
        if capture["_refunded"] >= cents:
            return unprocessable("CAPTURE_FULLY_REFUNDED")
        if wanted > cents - capture["_refunded"]:
            return unprocessable("REFUND_AMOUNT_EXCEEDED")
        capture["_refunded"] += wanted
        refund = {"id": _pp_id(), "status": "COMPLETED",
                  "amount": {"value": body.get("amount", capture["amount"])["value"],
                             "currency_code": capture["amount"]["currency_code"]},
                  "custom_id": body.get("custom_id"), "create_time": _now(), "links": []}
        self.refunds.append({**refund, "capture_id": capture_id})
        order = self.orders[capture["supplementary_data"]["related_ids"]["order_id"]]
        payments = order["purchase_units"][0].setdefault("payments", {})
        payments.setdefault("refunds", []).append(refund)
        return Reply(201, refund)

    def _verify(self, client_id: str, body: dict[str, Any]) -> Reply:
        needed = ("auth_algo", "cert_url", "transmission_id", "transmission_sig",
                  "transmission_time", "webhook_id", "webhook_event")
        if any(not body.get(name) for name in needed):
            return problem(400, "VALIDATION_ERROR", "Invalid request - see details",
                           "MISSING_REQUIRED_PARAMETER")
        sent = self._transmissions.get(body["transmission_id"])
        good = (
            sent is not None
            and self.webhooks.get(body["webhook_id"]) == client_id
            and sent[1] == body["webhook_event"]
            and hmac.compare_digest(
                self._signature(body["transmission_id"], body["transmission_time"],
                                body["webhook_id"], sent[0]),
                body["transmission_sig"],
            )
        )
        return Reply(200, {"verification_status": "SUCCESS" if good else "FAILURE"})


def _cents(value: str) -> int:
    whole, _, frac = value.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in obj.items() if not k.startswith("_")}))

