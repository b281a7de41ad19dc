"""Provider webhooks in: public (no API key), verified by signature, raw bodies.

The views read the exact bytes the provider signed, so they bypass the JSON request
layer; they are still listed in the OpenAPI document. A bad or missing signature is a 400
and changes nothing; a provider that cannot be asked (PayPal's verification call, or a
lookup) is a 503, so the provider delivers the event again later.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel

from app.api import context
from app.api.errors import Problem
from app.api.routing import Api, Endpoint
from app.providers.errors import ProviderError, TransientProviderError, WebhookRejected
from app.providers.paypal import WEBHOOK_HEADERS
from app.services import webhooks

api = Api(Blueprint("webhooks", __name__), tag="Webhooks")


class WebhookReceived(BaseModel):
    received: bool
    event_id: str
    result: str


def _receive(provider: str) -> Response:
    container = context.container()
    try:
        received = webhooks.receive(
            container.uow, container.providers, provider,
            request.get_data(cache=False), dict(request.headers.items()),
        )
    except WebhookRejected as exc:
        raise Problem(400, "invalid_signature", str(exc)) from exc
    except TransientProviderError as exc:
        raise Problem(503, "dependency_unavailable",
                      f"The {provider} API could not be reached; deliver the event again.",
                      headers={"Retry-After": "10"}) from exc
    except ProviderError as exc:
        raise Problem(400, exc.code, str(exc)) from exc
    return jsonify({"received": True, "event_id": received.event_id, "result": received.result})


def stripe_webhook() -> Response:
    return _receive("stripe")


def paypal_webhook() -> Response:
    return _receive("paypal")


for _rule, _view, _summary, _headers in (
    ("/webhooks/stripe", stripe_webhook, "Receive a Stripe event (Stripe-Signature)",
     ("Stripe-Signature",)),
    ("/webhooks/paypal", paypal_webhook, "Receive a PayPal event (PAYPAL-TRANSMISSION-SIG)",
     tuple(h.upper() for h in WEBHOOK_HEADERS.values())),
):
    api.blueprint.add_url_rule(_rule, view_func=_view, methods=["POST"])
    api.endpoints.append(Endpoint(
        method="POST", rule=_rule, summary=_summary, tag=api.tag, body=None, query=None,
        response=WebhookReceived, status=200, list_response=False, idempotency=None,
        public=True, headers=_headers,
    ))
