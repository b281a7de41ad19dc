"""Merchants' webhook endpoints: created with a secret shown once, listed, deleted; and
manual retries of their deliveries."""

from __future__ import annotations

from app.clock import utcnow
from app.events.outbox import EVENT_TYPES
from app.ids import new_id
from app.models import WebhookDelivery, WebhookEndpoint
from app.models.uow import UnitOfWork
from app.providers.credentials import Sealer
from app.services.errors import Invalid, NotFound
from app.services.scope import Scope
from app.webhooks import signing
from app.webhooks.sender import Unresolvable, UrlNotAllowed, check_url, resolve


def create_endpoint(
    uow: UnitOfWork,
    scope: Scope,
    sealer: Sealer,
    *,
    url: str,
    event_types: list[str],
    description: str | None,
    allow_private: bool,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (the only time the secret is returned)."""
    unknown = sorted(set(event_types) - EVENT_TYPES - {"*"})
    if unknown:
        raise Invalid("event_types", f"Unknown event types: {', '.join(unknown)}.")
    if "*" in event_types and len(event_types) > 1:
        raise Invalid("event_types", "'*' subscribes to every event type and stands alone.")
    try:
        check_url(url, livemode=scope.livemode)
        resolve(url, allow_private=allow_private)
    except UrlNotAllowed as exc:
        raise Invalid("url", str(exc), code="url_not_allowed") from None
    except Unresolvable:
        pass  # not known to be private; every delivery resolves and checks it again
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        id=new_id("we"),
        tenant_id=scope.tenant_id,
        livemode=scope.livemode,
        url=url,
        event_types=list(dict.fromkeys(event_types)),
        description=description,
        secret_sealed=sealer.seal({"secret": secret}),
    )
    uow.session.add(endpoint)
    uow.session.flush()
    return endpoint, secret


def delete_endpoint(uow: UnitOfWork, scope: Scope, endpoint_id: str) -> None:
    """Stop sending to an endpoint; its pending deliveries end unsent."""
    endpoint = scope.get(uow.session, WebhookEndpoint, endpoint_id, lock=True)
    if endpoint.deleted_at is not None:
        raise NotFound(f"No such webhook endpoint: '{endpoint_id}'")
    endpoint.deleted_at = utcnow()


def retry_delivery(uow: UnitOfWork, scope: Scope, delivery_id: str) -> WebhookDelivery:
    """Send a delivery again now, whatever its status (a new try; attempts go on counting)."""
    delivery = scope.get(uow.session, WebhookDelivery, delivery_id, lock=True)
    if uow.session.get_one(WebhookEndpoint, delivery.endpoint_id).deleted_at is not None:
        raise NotFound(f"No such webhook delivery: '{delivery_id}'")
    delivery.status = "pending"
    delivery.next_attempt_at = utcnow()
    uow.enqueue("deliver_webhooks", delivery.endpoint_id)  # wakes the endpoint's sender
    return delivery
