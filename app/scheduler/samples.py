"""What the scheduler samples for the metrics: renewals waiting to be claimed and how late
the oldest is, and each Dramatiq queue's ready messages and how long the oldest has waited."""

from __future__ import annotations

from app.bootstrap import Container
from app.scheduler.queues import queue_backlog
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
