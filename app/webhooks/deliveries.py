"""Deliveries: recorded from the events the dispatcher reads, sent by the worker fleet.

One row per (endpoint, event), unique, so an event read twice (a dispatcher killed before it
committed its Kafka offsets) is recorded once. The `deliver_webhooks(endpoint_id)` actor
sends an endpoint's due deliveries in claimed batches, one after another on one kept-alive
connection, holding one of the endpoint's few
sending slots (`Gate`): a slow or dead endpoint ties up at most that many worker threads
and delays only its own deliveries. Each try is signed anew (Standard Webhooks) with the
same `webhook-id`, the event's id. A try that is not a 2xx is retried on the contract's
schedule, then the delivery is `failed`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.clock import utcnow
from app.ids import new_id
from app.models import WebhookDelivery, WebhookEndpoint
from app.models.uow import UnitOfWork, UnitOfWorkFactory
from app.providers.credentials import Sealer
from app.telemetry import metrics
from app.webhooks import signing
from app.webhooks.gate import Gate
from app.webhooks.sender import Answer, Connection, Unresolvable, UrlNotAllowed, resolve

log = logging.getLogger(__name__)

#: Seconds from one try to the next after a failure (API.md: Webhooks out); then `failed`.
RETRY_SCHEDULE = (5, 30, 120, 600, 1800, 3600, 10800, 21600, 43200, 86400)
#: How long a sender holds a delivery it is trying (more than one try's timeout).
LEASE = timedelta(seconds=30)

#: Deliveries one sender claims at once (sent one after another on one connection).
BATCH = 50

_CLAIM = text(
    "UPDATE webhook_deliveries SET lease_until = now() + make_interval(secs => :lease)"
    " WHERE id IN (SELECT id FROM webhook_deliveries"
    "  WHERE endpoint_id = :endpoint AND status = 'pending' AND next_attempt_at <= now()"
    "  AND (lease_until IS NULL OR lease_until < now())"
    "  ORDER BY next_attempt_at, id LIMIT :limit FOR UPDATE SKIP LOCKED)"
    " RETURNING id, event_id, payload, attempts"
)


def record(uow: UnitOfWork, events: Sequence[dict[str, Any]],
           bodies: Sequence[str]) -> tuple[set[str], int]:
    """Record a delivery per event and subscribed endpoint: the endpoints that got any, and
    how many deliveries are new (an event read again is recorded once).

    `bodies` are the events exactly as read from Kafka, sent as they are.
    """
    session = uow.session
    scopes = {(e["tenant_id"], bool(e["livemode"])) for e in events}
    if not scopes:
        return set(), 0
    endpoints = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.tenant_id, WebhookEndpoint.livemode,
               WebhookEndpoint.event_types)
        .where(tuple_(WebhookEndpoint.tenant_id, WebhookEndpoint.livemode).in_(scopes),
               WebhookEndpoint.deleted_at.is_(None))
    ).all()
    now = utcnow()
    rows = [
        {"id": new_id("whd"), "tenant_id": event["tenant_id"], "livemode": event["livemode"],
         "endpoint_id": endpoint.id, "event_id": event["id"], "event_type": event["type"],
         "payload": body, "status": "pending", "attempts": 0, "next_attempt_at": now,
         "created_at": now, "updated_at": now}
        for event, body in zip(events, bodies, strict=True)
        for endpoint in endpoints
        if (endpoint.tenant_id, endpoint.livemode) == (event["tenant_id"], event["livemode"])
        and ("*" in endpoint.event_types or event["type"] in endpoint.event_types)
    ]
    if not rows:
        return set(), 0
    recorded = session.execute(insert(WebhookDelivery).values(rows).on_conflict_do_nothing(
        index_elements=["endpoint_id", "event_id"]).returning(WebhookDelivery.id)).all()
    return {row["endpoint_id"] for row in rows}, len(recorded)


@dataclass(frozen=True)
class Claimed:
    id: str
    event_id: str
    payload: str
    attempts: int


def send_due(
    uows: UnitOfWorkFactory,
    sealer: Sealer,
    gate: Gate,
    endpoint_id: str,
    *,
    allow_private: bool,
    budget_seconds: float,
) -> tuple[bool, list[float]]:
    """Send the endpoint's due deliveries, a claimed batch at a time, for up to
    `budget_seconds`.

    Returns (more may be due now, the delays of the retries it scheduled). Does nothing when
    the endpoint already has its share of senders: those go on until none is due.
    """
    token = gate.enter(endpoint_id)
    if token is None:
        return False, []
    retries: list[float] = []
    try:
        with uows() as uow:
            endpoint = uow.session.execute(
                select(WebhookEndpoint.url, WebhookEndpoint.secret_sealed)
                .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.deleted_at.is_(None))
            ).first()
        if endpoint is None:
            return False, []
        secret = sealer.open(endpoint.secret_sealed)["secret"]
        deadline = time.monotonic() + budget_seconds
        while time.monotonic() < deadline:
            claimed = _claim(uows, endpoint_id)
            if not claimed:
                return False, retries
            answers = _send(endpoint.url, secret, claimed, allow_private=allow_private)
            retries += _settle(uows, claimed, answers)
            gate.renew(endpoint_id, token)
        return True, retries
    finally:
        gate.leave(endpoint_id, token)


def _claim(uows: UnitOfWorkFactory, endpoint_id: str) -> list[Claimed]:
    with uows() as uow:
        rows = uow.session.execute(_CLAIM, {"endpoint": endpoint_id, "limit": BATCH,
                                            "lease": LEASE.total_seconds()}).all()
        uow.commit()
    return sorted((Claimed(r.id, r.event_id, r.payload, r.attempts) for r in rows),
                  key=lambda c: c.id)


def _send(url: str, secret: str, claimed: Sequence[Claimed], *,
          allow_private: bool) -> dict[str, Answer]:
    """Try the claimed deliveries in turn while their lease is young; the answers by id (the
    ones not tried are released untouched)."""
    try:
        target = resolve(url, allow_private=allow_private)
    except UrlNotAllowed as exc:
        log.warning("webhook URL refused", extra={"endpoint_url": url, "error": str(exc)})
        return {c.id: Answer(None, "url_not_allowed") for c in claimed}
    except Unresolvable:
        return {c.id: Answer(None, "host_unresolvable") for c in claimed}
    answers: dict[str, Answer] = {}
    connection = Connection(target)
    started = time.monotonic()
    try:
        for delivery in claimed:
            if time.monotonic() - started > LEASE.total_seconds() / 2:
                break  # a slow endpoint: leave the rest to the next claim, well inside the lease
            body = delivery.payload.encode()
            headers = signing.headers(secret, delivery.event_id, int(time.time()), body)
            with metrics.timer("WebhookCallLatency"):
                answers[delivery.id] = connection.post(body, headers)
    finally:
        connection.close()
    return answers


def _settle(uows: UnitOfWorkFactory, claimed: Sequence[Claimed],
            answers: dict[str, Answer]) -> list[float]:
    """Record the tries in one transaction; the delays to the retries they scheduled."""
    now = utcnow()
    tried, delays, outcomes = [], [], []
    for delivery in claimed:
        answer = answers.get(delivery.id)
        if answer is None:
            continue
        attempts = delivery.attempts + 1
        next_at = None
        if answer.delivered:
            status, outcome = "succeeded", "delivered"
        elif attempts > len(RETRY_SCHEDULE):
            status, outcome = "failed", "failed"
        else:
            delays.append(float(RETRY_SCHEDULE[attempts - 1]))
            status, outcome = "pending", "retrying"
            next_at = now + timedelta(seconds=delays[-1])
        outcomes.append(outcome)
        if not answer.delivered:
            log.info("webhook try failed", extra={
                "delivery_id": delivery.id, "attempt": attempts,
                "status_code": answer.status, "error": answer.error})
        tried.append({"id": delivery.id, "status": status, "attempts": attempts,
                      "last_status_code": answer.status, "next_attempt_at": next_at,
                      "lease_until": None, "updated_at": now})
    untried = [d.id for d in claimed if d.id not in answers]
    with uows() as uow:
        if tried:
            uow.session.execute(update(WebhookDelivery), tried)
        if untried:
            uow.session.execute(update(WebhookDelivery)
                                .where(WebhookDelivery.id.in_(untried)).values(lease_until=None))
        uow.commit()
    for outcome in outcomes:
        metrics.count("WebhookAttempts", Outcome=outcome)
    return delays


def forgotten(session: Session, *, stale_seconds: int, limit: int) -> list[str]:
    """The endpoints of deliveries due for a while that nobody is sending (a lost message,
    a dispatcher killed between its commit and its wake-up), longest waiting first."""
    now = utcnow()
    return list(session.scalars(
        select(WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.status == "pending",
               WebhookDelivery.next_attempt_at < now - timedelta(seconds=stale_seconds),
               (WebhookDelivery.lease_until.is_(None)) | (WebhookDelivery.lease_until < now))
        .group_by(WebhookDelivery.endpoint_id)
        .order_by(func.min(WebhookDelivery.next_attempt_at))
        .limit(limit)
    ))


def parse(values: Iterable[bytes]) -> tuple[list[dict[str, Any]], list[str]]:
    """Events and their bodies from Kafka record values; what is not an event is skipped."""
    events, bodies = [], []
    for value in values:
        try:
            body = value.decode()
            event = json.loads(body)
            _ = event["id"], event["type"], event["tenant_id"], event["livemode"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            log.error("skipping a record that is not an event")
            continue
        events.append(event)
        bodies.append(body)
    return events, bodies
