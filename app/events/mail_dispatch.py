"""The mail dispatcher: enqueues `send_mail(event_id)` for every mail-worthy outbox event.

It runs in the relay process beside the Kafka relay but does not wait for Kafka: mail goes
out while Kafka is down. The outbox row is marked (`mail_enqueued_at`) only after Redis took
the message, in the same transaction that locked it, so a crash re-enqueues instead of
losing a mail; the actor's dedupe key makes a second message harmless. Several dispatchers
may run at once: rows are claimed with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import dramatiq
import redis
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from app.bootstrap import QUEUES, Container
from app.clock import utcnow
from app.models.outbox import MAIL_EVENT_TYPES, OutboxEvent

log = logging.getLogger(__name__)

BATCH = 500
ACTOR = "send_mail"


class MailDispatcher:
    """Moves mail-worthy events from the outbox to the `mail` queue."""

    def __init__(self, container: Container, stop: threading.Event) -> None:
        self.container = container
        self.stop = stop

    def run(self) -> None:
        """Dispatch until `stop` is set; a database or Redis outage is waited out."""
        interval = self.container.config.relay_poll_interval_ms / 1000
        while not self.stop.is_set():
            try:
                dispatched = self.dispatch_batch()
            except (DBAPIError, redis.RedisError) as exc:
                log.warning("mail dispatch unavailable; retrying", extra={"error": str(exc)})
                self.stop.wait(1.0)
                continue
            if dispatched < BATCH:
                self.stop.wait(interval)

    def dispatch_batch(self) -> int:
        """Enqueue one batch of undispatched mail events; how many."""
        with self.container.uow() as uow:
            rows = uow.session.execute(
                select(OutboxEvent.id, OutboxEvent.event_id)
                .where(OutboxEvent.mail_enqueued_at.is_(None),
                       OutboxEvent.type.in_(MAIL_EVENT_TYPES))
                .order_by(OutboxEvent.id)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            if not rows:
                return 0
            for _, event_id in rows:
                self._enqueue(event_id)
            uow.session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_([row_id for row_id, _ in rows]))
                .values(mail_enqueued_at=utcnow())
            )
            uow.commit()
            return len(rows)

    def _enqueue(self, event_id: str) -> None:
        """Send the message to Redis, raising if Redis does not take it."""
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=QUEUES[ACTOR], actor_name=ACTOR, args=(event_id,), kwargs={}, options={}
        )
        self.container.broker.enqueue(message)
