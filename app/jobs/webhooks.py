"""The webhook sender: its own queue, so deliveries never wait behind charges nor the reverse."""

from __future__ import annotations

import functools

import dramatiq
import redis
from sqlalchemy.exc import OperationalError

from app.bootstrap import QUEUES
from app.jobs.runtime import container
from app.webhooks import deliveries
from app.webhooks.gate import Gate

#: How long one message sends before it hands the endpoint on to a new message.
BUDGET_SECONDS = 30.0


@functools.cache
def gate() -> Gate:
    c = container()
    return Gate(c.redis, c.config.redis_namespace, c.config.webhook_endpoint_concurrency)


def _transient(retries: int, exc: BaseException) -> bool:
    """The database or Redis blinked: try again (the scheduler's sweep is the backstop)."""
    return isinstance(exc, OperationalError | redis.RedisError) and retries < 10


@dramatiq.actor(queue_name=QUEUES["deliver_webhooks"], max_retries=10, min_backoff=1000,
                max_backoff=60_000, retry_when=_transient, time_limit=600_000)
def deliver_webhooks(endpoint_id: str) -> None:
    """Send an endpoint's due deliveries; wake again for what is left and for retries."""
    c = container()
    more, retries = deliveries.send_due(
        c.uow, c.sealer, gate(), endpoint_id,
        allow_private=c.config.webhooks_allow_private_networks, budget_seconds=BUDGET_SECONDS)
    if more:
        c.enqueue("deliver_webhooks", endpoint_id)
    for delay in sorted(set(retries)):
        c.enqueue("deliver_webhooks", endpoint_id, delay_ms=int(delay * 1000))
