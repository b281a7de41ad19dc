"""`python -m app.webhooks`: reads the engine's topics and records webhook deliveries.

One Kafka consumer group (`webhook-dispatcher`): start as many as there are partitions and
Kafka shares them out. Each polled batch's deliveries are committed to PostgreSQL first and
the Kafka offsets only after, so a dispatcher killed at any point reads the batch again and
records nothing twice (a delivery is unique per endpoint and event). Then it wakes each
endpoint's sender. A database outage is waited out without committing offsets.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError

from app.bootstrap import Container, build
from app.events.kafka import client_settings
from app.events.outbox import TOPICS
from app.log import configure_logging
from app.telemetry import metrics
from app.webhooks import deliveries

log = logging.getLogger(__name__)
GROUP = "webhook-dispatcher"
MAX_RECORDS = 500


def new_consumer(container: Container) -> KafkaConsumer:
    """A consumer of every engine topic in the dispatcher's group, committing by hand."""
    consumer = KafkaConsumer(
        **client_settings(container.config),
        group_id=GROUP,
        client_id="webhook-dispatcher",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=MAX_RECORDS,
        metadata_max_age_ms=5000,  # topics the relay creates later are found soon
    )
    consumer.subscribe(sorted(set(TOPICS.values())))
    return consumer


def run(container: Container, stop: threading.Event) -> None:
    """Consume until `stop` is set."""
    consumer = new_consumer(container)
    try:
        while not stop.is_set():
            batch = consumer.poll(timeout_ms=200)
            values = [record.value for records in batch.values() for record in records]
            if not values:
                continue
            while not stop.is_set():
                try:
                    woken = _record(container, values)
                    break
                except DBAPIError as exc:
                    log.warning("cannot record deliveries; retrying", extra={"error": str(exc)})
                    stop.wait(1.0)
            else:
                return  # stopping: the batch's offsets stay uncommitted, it is read again
            consumer.commit()
            for endpoint_id in woken:
                container.enqueue("deliver_webhooks", endpoint_id)
    finally:
        consumer.close(autocommit=False)


def _record(container: Container, values: list[bytes]) -> set[str]:
    events, bodies = deliveries.parse(values)
    with container.uow() as uow:
        woken, recorded = deliveries.record(uow, events, bodies)
        uow.commit()
    metrics.count("WebhookDeliveriesRecorded", recorded)
    return woken


def main() -> None:
    container = build()
    configure_logging(container.config.log_level)
    stop = threading.Event()

    def _stop(_: int, __: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    metrics.start("webhooks", container.config)
    metrics.serve(container.config.metrics_port)
    log.info("webhook dispatcher started")
    while not stop.is_set():
        try:
            run(container, stop)
        except KafkaError as exc:
            log.warning("Kafka unavailable; reconnecting", extra={"error": str(exc)})
            stop.wait(1.0)
