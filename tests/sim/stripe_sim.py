"""A local Stripe: the endpoints our adapter uses, in Stripe's wire format.

Form-encoded requests (`metadata[payment_id]=…`), JSON answers, `{"error": {...}}`
envelopes with Stripe's types and codes, Bearer secret keys, and idempotency as Stripe
does it: the first answer of a key is replayed (errors included, with
`Idempotent-Replayed: true`), the same key with other parameters is an `idempotency_error`.

Magic payment methods behave like Stripe's test ones (`pm_card_visa`,
`pm_card_chargeDeclinedInsufficientFunds`, `pm_card_authenticationRequired`, …). The
ledger (`charges`) holds every successful charge, so tests can prove "charged once".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from tests.sim.server import Reply, Seen, SimServer

Decline = tuple[str, str, str]  # code, decline_code, message
_DECLINED = "Your card was declined."
MAGIC: dict[str, tuple[str, str, Decline | str | None]] = {
    "pm_card_visa": ("visa", "4242", None),
    "pm_card_mastercard": ("mastercard", "4444", None),
    "pm_card_chargeDeclined": ("visa", "0002", ("card_declined", "generic_decline", _DECLINED)),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "visa", "9995", ("card_declined", "insufficient_funds", "Your card has insufficient funds.")
    ),
    "pm_card_chargeDeclinedLostCard": ("visa", "9987", ("card_declined", "lost_card", _DECLINED)),
    "pm_card_chargeDeclinedStolenCard": (
        "visa", "9979", ("card_declined", "stolen_card", _DECLINED)
    ),
    "pm_card_chargeDeclinedFraudulent": (
        "visa", "0019", ("card_declined", "fraudulent", _DECLINED)
    ),
    "pm_card_authenticationRequired": ("visa", "3184", "3ds"),
}
_NOT_STORED = {400, 401, 404}  # rejected before any endpoint ran: Stripe saves no result
_SEARCH = re.compile(r"^metadata\['(\w+)'\]:'([^']*)'$")


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`a[b]=1&c[0]=x` → {"a": {"b": "1"}, "c": ["x"]}, as Stripe reads form bodies."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node: Any = out
        for part, nxt in zip(parts, [*parts[1:], None], strict=True):
            if nxt is None:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return {k: _listify(v) for k, v in out.items()}


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        if value and all(k.isdigit() for k in value):
            return [_listify(value[k]) for k in sorted(value, key=int)]
        return {k: _listify(v) for k, v in value.items()}
    return value


def error(status: int, kind: str, message: str, **fields: Any) -> Reply:
    """A Stripe error envelope."""
    body = {"error": {"type": kind, "message": message,
                      **{k: v for k, v in fields.items() if v is not None}}}
    return Reply(status, body, {"Request-Id": _id("req")})


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header for `payload`, as Stripe signs webhook deliveries."""
    stamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256)
    return f"t={stamp},v1={mac.hexdigest()}"


@dataclass
class _Stored:
    method: str
    path: str
    params: dict[str, Any]
    reply: Reply


class StripeSim(SimServer):
    """The Stripe API subset: payment methods, PaymentIntents (create, confirm, retrieve,
    search), refunds."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, bool] = {}  # secret key -> livemode
        self.payment_methods: dict[str, dict[str, Any]] = {}
        self.intents: dict[str, dict[str, Any]] = {}
        self.charges: list[dict[str, Any]] = []
        self.refunds: list[dict[str, Any]] = []
        self._idempotency: dict[tuple[str, str], _Stored] = {}
        self._behaviour: dict[str, Decline | str | None] = {}

    # -- test helpers --------------------------------------------------------------------

    def new_key(self, *, livemode: bool = False) -> str:
        """A secret key this Stripe accepts (one account per key)."""
        key = ("sk_live_" if livemode else "sk_test_") + secrets.token_hex(12)
        with self.lock:
            self.keys[key] = livemode
        return key

    def attached_payment_method(self, key: str, customer: str, like: str = "pm_card_visa") -> str:
        """A payment method attached to `customer`, behaving like the magic one `like`."""
        brand, last4, behaviour = MAGIC[like]
        pm_id = _id("pm")
        with self.lock:
            self.payment_methods[pm_id] = self._pm(pm_id, brand, last4, customer, key)
            self._behaviour[pm_id] = behaviour
        return pm_id

    def is_attached(self, pm_id: str) -> bool:
        with self.lock:
            return pm_id in self.payment_methods

    def forget_keys(self) -> None:
        """What 24 hours do at Stripe: every idempotency key is forgotten (objects stay)."""
        with self.lock:
            self._idempotency.clear()

    def charges_for(self, payment_id: str) -> list[dict[str, Any]]:
        """The successful charges whose PaymentIntent carries our payment id."""
        with self.lock:
            return [c for c in self.charges
                    if c["metadata"].get("payment_id") == payment_id and c["paid"]]

    def intent_for(self, payment_id: str) -> dict[str, Any]:
        with self.lock:
            return next(pi for pi in self.intents.values()
                        if pi["metadata"].get("payment_id") == payment_id)

    def authenticate(self, intent_id: str, *, succeed: bool = True) -> dict[str, Any]:
        """The customer finishes (or fails) 3-D Secure; returns the event Stripe would send."""
        with self.lock:
            intent = self.intents[intent_id]
            assert intent["status"] == "requires_action", intent["status"]
            intent["next_action"] = None
            if succeed:
                self._succeed(intent)
                return self.event("payment_intent.succeeded", intent)
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = {
                "type": "invalid_request_error", "code": "payment_intent_authentication_failure",
                "message": "The provided PaymentMethod has failed authentication.",
            }
            return self.event("payment_intent.payment_failed", intent)

    def event(self, kind: str, intent: dict[str, Any]) -> dict[str, Any]:
        """A Stripe event about `intent` as it is now."""
        return {
            "id": _id("evt"), "object": "event", "api_version": "2025-09-30.clover",
            "created": int(time.time()), "type": kind, "livemode": intent["livemode"],
            "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
            "data": {"object": json.loads(json.dumps(intent))},
        }

    # -- the HTTP API --------------------------------------------------------------------

    def error_reply(self, status: int) -> Reply:
        if status == 429:
            return error(429, "invalid_request_error", "Request rate limit exceeded.",
                         code="rate_limit")
        return error(status, "api_error", "An unknown error occurred.")

    def flight_key(self, seen: Seen) -> str | None:
        key = seen.headers.get("idempotency-key")
        if seen.method != "POST" or not key:
            return None
        return f"{seen.headers.get('authorization', '')} {key}"

    def conflict_reply(self) -> Reply:
        return error(409, "idempotency_error",
                     "There is currently another in-progress request using this Idempotent "
                     "Key (that probably means you submitted twice, and the other request is "
                     "still going through). Please try again later.")

    def handle(self, seen: Seen) -> Reply:
        key = seen.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if key not in self.keys:
            return error(401, "invalid_request_error",
                         f"Invalid API Key provided: {key[:8]}****{key[-4:]}")
        params = unflatten(parse_qsl(seen.body.decode(), keep_blank_values=True))
        if seen.method != "POST" or "idempotency-key" not in seen.headers:
            return self._route(key, seen, params)
        slot = (key, seen.headers["idempotency-key"])
        stored = self._idempotency.get(slot)
        if stored is not None:
            if (stored.method, stored.path, stored.params) != (seen.method, seen.path, params):
                return error(400, "idempotency_error",
                             "Keys for idempotent requests can only be used with the same "
                             "parameters they were first used with. Try using a key other "
                             f"than '{slot[1]}' if you meant to execute a different request.")
            return Reply(stored.reply.status, stored.reply.body,
                         {**stored.reply.headers, "Idempotent-Replayed": "true"})
        reply = self._route(key, seen, params)
        if reply.status not in _NOT_STORED:
            self._idempotency[slot] = _Stored(seen.method, seen.path, params, reply)
        return reply

    def _route(self, key: str, seen: Seen, params: dict[str, Any]) -> Reply:
        path, method = seen.path.rstrip("/"), seen.method
        parts = path.split("/")[2:]  # after /v1
        if method == "GET" and parts[:1] == ["payment_methods"] and len(parts) == 2:
            return self._get_pm(key, parts[1])
        if method == "POST" and parts[:1] == ["payment_methods"] and parts[2:] == ["detach"]:
            return self._detach_pm(key, parts[1])
        if method == "POST" and parts == ["payment_intents"]:
            return self._create_intent(key, params)
        if method == "GET" and parts == ["payment_intents", "search"]:
            return self._search(key, seen.query.get("query", ""))
        if parts[:1] == ["payment_intents"] and len(parts) >= 2:
            intent = self.intents.get(parts[1])
            if intent is None or intent["_key"] != key:
                return _missing("payment_intent", parts[1], "intent")
            if method == "GET" and len(parts) == 2:
                return self._ok(intent)
            if method == "POST" and parts[2:] == ["confirm"]:
                return self._confirm(intent, params)
            if method == "POST" and parts[2:] == ["cancel"]:
                return self._cancel(intent)
        if method == "POST" and parts == ["refunds"]:
            return self._refund(key, params)
        if method == "GET" and parts == ["refunds"]:
            return self._list_refunds(key, seen.query.get("payment_intent", ""))
        return error(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    def _ok(self, obj: dict[str, Any], status: int = 200) -> Reply:
        return Reply(status, _public(obj), {"Request-Id": _id("req")})

    def _pm(self, pm_id: str, brand: str, last4: str, customer: str | None,
            key: str | None) -> dict[str, Any]:
        return {
            "id": pm_id, "object": "payment_method", "type": "card", "customer": customer,
            "livemode": False, "created": int(time.time()), "metadata": {},
            "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2034,
                     "funding": "credit", "country": "US"},
            "billing_details": {"email": None, "name": None}, "_key": key,
        }

    def _find_pm(self, key: str, pm_id: str) -> dict[str, Any] | None:
        if pm_id in MAGIC:
            brand, last4, behaviour = MAGIC[pm_id]
            self._behaviour.setdefault(pm_id, behaviour)
            return self._pm(pm_id, brand, last4, None, None)
        found = self.payment_methods.get(pm_id)
        return found if found is not None and found["_key"] in (key, None) else None

    def _get_pm(self, key: str, pm_id: str) -> Reply:
        found = self._find_pm(key, pm_id)
        if found is None:
            return _missing("payment_method", pm_id, "PaymentMethod")
        return self._ok(found)

    def _detach_pm(self, key: str, pm_id: str) -> Reply:
        """Detached from its customer, a PaymentMethod can never be used again."""
        found = self._find_pm(key, pm_id)
        if found is None:
            return _missing("payment_method", pm_id, "PaymentMethod")
        if not found["customer"]:
            return error(400, "invalid_request_error",
                         "The payment method you provided is not attached to a customer so "
                         "detachment is impossible.", code="payment_method_unexpected_state")
        self.payment_methods.pop(pm_id)
        return self._ok({**found, "customer": None})

    def _create_intent(self, key: str, params: dict[str, Any]) -> Reply:
        try:
            amount = int(params.get("amount", ""))
        except ValueError:
            return error(400, "invalid_request_error", "Missing required param: amount.",
                         param="amount", code="parameter_missing")
        pm_id = params.get("payment_method")
        pm = self._find_pm(key, pm_id) if pm_id else None
        if pm_id and pm is None:
            return _missing("payment_method", pm_id, "PaymentMethod", param="payment_method")
        if pm is not None and pm["customer"] and params.get("customer") != pm["customer"]:
            return error(400, "invalid_request_error",
                         f"The provided PaymentMethod belongs to Customer {pm['customer']}. "
                         "Please provide the Customer in the `customer` parameter.",
                         param="customer")
        intent = {
            "id": _id("pi"), "object": "payment_intent", "amount": amount, "amount_received": 0,
            "currency": params.get("currency"), "customer": params.get("customer"),
            "description": params.get("description"), "metadata": params.get("metadata", {}),
            "payment_method": pm_id,
            "payment_method_types": params.get("allowed_payment_method_types", ["card"]),
            "status": "requires_confirmation" if pm_id else "requires_payment_method",
            "livemode": self.keys[key], "created": int(time.time()), "latest_charge": None,
            "last_payment_error": None, "next_action": None, "capture_method": "automatic",
            "confirmation_method": "automatic", "_key": key,
        }
        intent["client_secret"] = f"{intent['id']}_secret_{secrets.token_hex(8)}"
        self.intents[intent["id"]] = intent
        if params.get("confirm") == "true":
            return self._confirm(intent, params)
        return self._ok(intent)

    def _confirm(self, intent: dict[str, Any], params: dict[str, Any]) -> Reply:
        if intent["status"] not in ("requires_confirmation", "requires_payment_method"):
            return error(400, "invalid_request_error",
                         "You cannot confirm this PaymentIntent because it has a status of "
                         f"{intent['status']}.", code="payment_intent_unexpected_state",
                         payment_intent=_public(intent))
        pm_id = params.get("payment_method") or intent["payment_method"]
        if not pm_id or self._find_pm(intent["_key"], pm_id) is None:
            return _missing("payment_method", str(pm_id), "PaymentMethod", param="payment_method")
        intent["payment_method"] = pm_id
        behaviour = self._behaviour.get(pm_id)
        if behaviour == "3ds" and params.get("off_session") == "true":
            behaviour = ("authentication_required", "authentication_required",
                         "Your card was declined. This transaction requires authentication.")
        if behaviour == "3ds":
            intent["status"] = "requires_action"
            intent["next_action"] = {"type": "redirect_to_url", "redirect_to_url": {
                "url": f"{self.url}/3ds/{intent['id']}", "return_url": params.get("return_url")}}
            return self._ok(intent)
        if isinstance(behaviour, tuple):
            return self._decline(intent, behaviour)
        self._succeed(intent)
        return self._ok(intent)

    def _cancel(self, intent: dict[str, Any]) -> Reply:
        if intent["status"] in ("succeeded", "canceled", "processing"):
            return error(400, "invalid_request_error",
                         "You cannot cancel this PaymentIntent because it has a status of "
                         f"{intent['status']}.", code="payment_intent_unexpected_state",
                         payment_intent=_public(intent))
        intent.update(status="canceled", next_action=None, canceled_at=int(time.time()),
                      cancellation_reason="abandoned")
        return self._ok(intent)

    def _succeed(self, intent: dict[str, Any]) -> None:
        charge = {"id": _id("ch"), "object": "charge", "amount": intent["amount"],
                  "currency": intent["currency"], "payment_intent": intent["id"],
                  "metadata": dict(intent["metadata"]), "paid": True, "status": "succeeded",
                  "amount_refunded": 0, "created": int(time.time())}
        self.charges.append(charge)
        intent.update(status="succeeded", amount_received=intent["amount"],
                      latest_charge=charge["id"], last_payment_error=None, next_action=None)

    def _decline(self, intent: dict[str, Any], decline: Decline) -> Reply:
        code, decline_code, message = decline
        charge_id = _id("ch")
        self.charges.append({"id": charge_id, "object": "charge", "amount": intent["amount"],
                             "currency": intent["currency"], "payment_intent": intent["id"],
                             "metadata": dict(intent["metadata"]), "paid": False,
                             "status": "failed", "amount_refunded": 0})
        failure = {"type": "card_error", "code": code, "decline_code": decline_code,
                   "message": message, "charge": charge_id}
        intent.update(status="requires_payment_method", latest_charge=charge_id,
                      last_payment_error=failure)
        return error(402, "card_error", message, code=code, decline_code=decline_code,
                     charge=charge_id, payment_intent=_public(intent),
                     doc_url=f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}")

    def _search(self, key: str, query: str) -> Reply:
        match = _SEARCH.match(query.strip())
        if match is None:
            return error(400, "invalid_request_error", f"Unsupported search query: {query}",
                         param="query")
        field, value = match.groups()
        found = [_public(pi) for pi in self.intents.values()
                 if pi["_key"] == key and pi["metadata"].get(field) == value]
        body = {"object": "search_result", "url": "/v1/payment_intents/search",
                "data": sorted(found, key=lambda pi: -pi["created"]), "has_more": False,
                "next_page": None}
        return Reply(200, body, {"Request-Id": _id("req")})

    def _list_refunds(self, key: str, intent_id: str) -> Reply:
        intent = self.intents.get(intent_id)
        if intent is None or intent["_key"] != key:
            return _missing("payment_intent", intent_id, "payment_intent",
                            param="payment_intent")
        found = [r for r in self.refunds if r["payment_intent"] == intent_id]
        return _listed(sorted(found, key=lambda r: -r["created"]), "/v1/refunds")

    def _refund(self, key: str, params: dict[str, Any]) -> Reply:
        intent = self.intents.get(params.get("payment_intent", ""))
        if intent is None or intent["_key"] != key:
            return _missing("payment_intent", params.get("payment_intent", ""), "payment_intent",
                            param="payment_intent")
        charge = next((c for c in self.charges if c["id"] == intent["latest_charge"]), None)
        if charge is None or not charge["paid"]:
            return error(400, "invalid_request_error",
                         "This PaymentIntent does not have a successful charge to refund.",
                         code="charge_not_refundable")
        remaining = charge["amount"] - charge["amount_refunded"]
        amount = int(params.get("amount", remaining))
        if remaining == 0:
            return error(400, "invalid_request_error",
                         f"Charge {charge['id']} has already been refunded.",
                         code="charge_already_refunded")
        if amount > remaining:
            return error(400, "invalid_request_error",
                         f"Refund amount ({amount}) is greater than unrefunded amount on "
                         f"charge ({remaining}).", code="amount_too_large", param="amount")
        charge["amount_refunded"] += amount
        refund = {"id": _id("re"), "object": "refund", "amount": amount,
                  "currency": charge["currency"], "charge": charge["id"],
                  "payment_intent": intent["id"], "status": "succeeded",
                  "metadata": params.get("metadata", {}), "created": int(time.time())}
        self.refunds.append(refund)
        return self._ok(refund)


def _listed(data: list[dict[str, Any]], url: str) -> Reply:
    return Reply(200, {"object": "list", "url": url, "has_more": False, "data": data},
                 {"Request-Id": _id("req")})


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _missing(kind: str, object_id: str, label: str, param: str = "id") -> Reply:
    return error(404, "invalid_request_error", f"No such {label}: '{object_id}'",
                 code="resource_missing", param=param)
