"""What the scheduler samples for the metrics: renewals waiting to be claimed and how late
the oldest is, and each Dramatiq queue's ready messages and how long the oldest has waited."""

from __future__ import annotations

import json
import time

import redis

from app.bootstrap import Container
from app.services import renewals
from app.telemetry import metrics
from app.telemetry.catalog import QUEUES


def sample(container: Container) -> None:
    """Set RenewalsDue, RenewalLag, QueueDepth and QueueMessageAge."""
    with container.uow() as uow:
        due, lag = renewals.due_backlog(uow)
    metrics.gauge("RenewalsDue", due)
    metrics.gauge("RenewalLag", lag)
    for queue in QUEUES:
        depth, age = queue_backlog(container.redis, container.broker.namespace, queue)
        metrics.gauge("QueueDepth", depth, Queue=queue)
        metrics.gauge("QueueMessageAge", age, Queue=queue)


def queue_backlog(client: redis.Redis, namespace: str, queue: str) -> tuple[int, float]:
    """Messages ready in a queue of Dramatiq's Redis broker, and the age in seconds of the
    oldest (the list's head), counted from when it became ready: its enqueue, or its eta.

    The broker keeps `<namespace>:<queue>` (a list of message ids, oldest first) and
    `<namespace>:<queue>.msgs` (id -> the JSON message).
    """
    key = f"{namespace}:{queue}"
    depth, head = client.llen(key), client.lindex(key, 0)
    if head is None:
        return int(depth), 0.0
    raw = client.hget(f"{key}.msgs", head)
    if raw is None:  # fetched between the two reads
        return int(depth), 0.0
    message = json.loads(raw)
    ready_ms = max(message["message_timestamp"], message["options"].get("eta", 0))
    return int(depth), max(0.0, time.time() - ready_ms / 1000)
