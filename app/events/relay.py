"""`python -m app.events.relay`: publishes committed outbox rows to Kafka, in id order.

Why this order is commit order per key: every transaction that writes an object's event
holds that object's row lock (SELECT ... FOR UPDATE or an UPDATE of it) from before the
outbox insert until it commits, so two events of one key are inserted, numbered and committed
one after the other. Any snapshot that sees the later one sees the earlier one too: the
unsent rows of a key that the relay can see are always the oldest unsent ones, in id order.

Why nothing is lost or skipped: there is no high-water mark. The relay reads unsent rows
(`sent_at IS NULL`), so a row with a lower id that commits after a higher one (another key:
the lock above rules out the same key) is simply picked up by the next read. A row is marked
sent only after Kafka acknowledged it (acks=all); a crash in between re-sends it, so a
consumer can see an event twice (it dedupes on `id`) but never misses one.

Why several relays are safe: the active relay holds a PostgreSQL advisory lock on the
connection it reads and marks with; the others wait for it. If it dies, its connection
closes, the lock is released and a standby takes over from the unsent rows. With
RELAY_SHARDS=N the keys are split by hash into N shards, each with its own lock and its own
child process (a relay is CPU-bound in the Kafka client): all events of a key are in one
shard, so their order holds, and N cores share the load.

Kafka down: the producer keeps every record of the batch and retries in order (one request in
flight, no delivery timeout), the relay waits and re-creates the topics (a restarted embedded
broker has none); the outbox grows meanwhile and drains in order once Kafka answers.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from types import FrameType

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from kafka.producer.future import FutureRecordMetadata
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from app.bootstrap import Container, build
from app.config import Config
from app.events.kafka import client_settings
from app.events.outbox import TOPICS
from app.log import configure_logging
from app.models.outbox import MAIL_EVENT_TYPES
from app.telemetry import metrics

log = logging.getLogger(__name__)

#: Advisory lock key held by the active relay (any constant unique to this use).
RELAY_LOCK = 0x5E_0E_7E_1A
PRUNE_CHUNK = 10_000

FETCH = text(
    "SELECT id, topic, key, payload::text AS value FROM outbox_events"
    " WHERE sent_at IS NULL AND (hashtext(key) & 2147483647) % :shards = :shard"
    " ORDER BY id LIMIT :limit"
)
MARK = text("UPDATE outbox_events SET sent_at = now() WHERE id = ANY(:ids)")
BACKLOG = text(
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)"
    " FROM outbox_events WHERE sent_at IS NULL"
)
PRUNE = text(
    "DELETE FROM outbox_events WHERE id IN (SELECT id FROM outbox_events"
    " WHERE sent_at < now() - make_interval(secs => :seconds)"
    " AND (mail_enqueued_at IS NOT NULL OR type <> ALL(:mail_types))"
    " LIMIT :chunk)"
)


class Stopping(Exception):
    """Raised inside the relay loop when a stop was requested mid-batch."""


def ensure_topics(config: Config) -> None:
    """Create the engine's topics (billing.payments, .subscriptions, .customers) if missing."""
    admin = KafkaAdminClient(
        **client_settings(config),
        request_timeout_ms=5000,
        client_id="outbox-relay-admin",
    )
    try:
        for topic in sorted(set(TOPICS.values())):
            new = NewTopic(topic, config.kafka_topic_partitions, config.kafka_replication_factor)
            try:
                admin.create_topics([new])
                log.info("created topic", extra={"topic": topic})
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def new_producer(config: Config) -> KafkaProducer:
    """A producer that keeps per-partition order through retries and never drops a record."""
    return KafkaProducer(
        **client_settings(config),
        client_id="outbox-relay",
        acks="all",
        retries=float("inf"),
        max_in_flight_requests_per_connection=1,
        delivery_timeout_ms=2**31 - 1,
        request_timeout_ms=10_000,
        max_block_ms=int(config.relay_flush_timeout_seconds * 1000),
        allow_auto_create_topics=False,
        linger_ms=5,
        batch_size=256 * 1024,
        key_serializer=str.encode,
        value_serializer=str.encode,
    )


@dataclass
class Row:
    id: int
    topic: str
    key: str
    value: str


def acknowledged(rows: Sequence[Row], futures: Sequence[FutureRecordMetadata | None]) -> list[int]:
    """Ids of rows Kafka acknowledged, stopping per key at its first unacknowledged row.

    A later row of a key whose earlier row failed is left unsent too, so that the next
    attempt sends them again in their order.
    """
    failed_keys: set[str] = set()
    ids: list[int] = []
    for row, future in zip(rows, futures, strict=True):
        if future is not None and future.succeeded() and row.key not in failed_keys:
            ids.append(row.id)
        else:
            failed_keys.add(row.key)
            if future is not None and future.failed():
                log.error("Kafka refused an event", extra={"outbox_id": row.id,
                                                           "error": str(future.exception)})
    return ids


class Relay:
    """Moves outbox rows to Kafka while it holds the relay lock; see the module docstring."""

    def __init__(
        self, config: Config, engine: Engine, stop: threading.Event | None = None, shard: int = 0
    ) -> None:
        assert 0 <= shard < config.relay_shards, "shard out of range"
        self.config = config
        self.engine = engine
        self.stop = stop or threading.Event()
        self.shard = shard
        self.producer: KafkaProducer | None = None
        self.next_prune = 0.0

    def run(self) -> None:
        """Relay until `stop` is set, reconnecting to PostgreSQL and Kafka as needed."""
        while not self.stop.is_set():
            try:
                with self.engine.connect() as conn:
                    self._run_locked(conn)
            except DBAPIError as exc:
                log.warning("database unavailable; relay retries", extra={"error": str(exc)})
                self.stop.wait(1.0)
            except Stopping:
                break
        self.close()

    def close(self) -> None:
        if self.producer is not None:
            try:
                self.producer.close(timeout=1)
            except KafkaError:
                pass
            self.producer = None

    def _run_locked(self, conn: Connection) -> None:
        while not self._try_lock(conn):
            if self.stop.wait(max(0.5, self.config.relay_poll_interval_ms / 100)):
                return
        log.info("relay is active", extra={"shard": self.shard})
        try:
            while not self.stop.is_set():
                relayed = self.relay_batch(conn)
                self._maybe_prune(conn)
                if relayed < self.config.relay_batch_size:
                    self.stop.wait(self.config.relay_poll_interval_ms / 1000)
        finally:
            self._unlock(conn)

    def _unlock(self, conn: Connection) -> None:
        """Release the lock at once for a standby (closing the connection would too)."""
        try:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k, :shard)"),
                         {"k": RELAY_LOCK, "shard": self.shard})
            conn.commit()
        except DBAPIError:
            conn.invalidate()

    def _try_lock(self, conn: Connection) -> bool:
        """Take this shard's lock: one active relay per shard, wherever relays run."""
        locked = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:k, :shard)"),
                                  {"k": RELAY_LOCK, "shard": self.shard}))
        conn.commit()
        return locked

    def relay_batch(self, conn: Connection) -> int:
        """Publish the oldest unsent rows and mark the acknowledged ones; how many were."""
        params = {"limit": self.config.relay_batch_size, "shards": self.config.relay_shards,
                  "shard": self.shard}
        rows = [Row(*r) for r in conn.execute(FETCH, params)]
        conn.commit()
        if not rows:
            return 0
        futures = self._send(rows)
        self._flush()
        ids = acknowledged(rows, futures)
        if ids:
            conn.execute(MARK, {"ids": ids})
            conn.commit()
            metrics.count("EventsPublished", len(ids))
        return len(ids)

    def _send(self, rows: Sequence[Row]) -> list[FutureRecordMetadata | None]:
        """Hand every row to the producer; after a refusal, the rest waits for the next batch."""
        producer = self._producer()
        futures: list[FutureRecordMetadata | None] = [None] * len(rows)
        for index, row in enumerate(rows):
            try:
                futures[index] = producer.send(row.topic, key=row.key, value=row.value)
            except KafkaTimeoutError:
                log.warning("Kafka metadata unavailable; retrying", extra={"topic": row.topic})
                self._recover()
                break
            except KafkaError as exc:
                log.error("Kafka refused an event", extra={"outbox_id": row.id, "error": str(exc)})
                break
        return futures

    def _flush(self) -> None:
        """Wait until Kafka has answered every record sent; while it is down, keep waiting."""
        producer = self._producer()
        while True:
            try:
                producer.flush(timeout=self.config.relay_flush_timeout_seconds)
                return
            except KafkaTimeoutError:
                log.warning("Kafka unavailable; relay waits, the outbox keeps the events")
                self._recover()
                if self.stop.is_set():
                    raise Stopping() from None

    def _recover(self) -> None:
        """Re-create the topics (a restarted broker may have lost them); tolerate failure."""
        try:
            ensure_topics(self.config)
        except KafkaError as exc:
            log.warning("cannot reach Kafka to create topics", extra={"error": str(exc)})
            self.stop.wait(0.5)

    def _producer(self) -> KafkaProducer:
        while self.producer is None:
            try:
                ensure_topics(self.config)
                self.producer = new_producer(self.config)
            except KafkaError as exc:
                log.warning("Kafka unavailable; relay retries", extra={"error": str(exc)})
                if self.stop.wait(1.0):
                    raise Stopping() from None
        return self.producer

    def _maybe_prune(self, conn: Connection) -> None:
        now = time.monotonic()
        if self.shard != 0 or now < self.next_prune:
            return
        self.next_prune = now + self.config.outbox_prune_interval_seconds
        pruned = prune(conn, self.config.outbox_retention_hours)
        if pruned:
            log.info("pruned sent outbox rows", extra={"rows": pruned})


def prune(conn: Connection, retention_hours: float) -> int:
    """Delete rows sent (and mailed) more than `retention_hours` ago, in small transactions."""
    total = 0
    while True:
        result = conn.execute(PRUNE, {"seconds": retention_hours * 3600, "chunk": PRUNE_CHUNK,
                                      "mail_types": list(MAIL_EVENT_TYPES)})
        conn.commit()
        deleted = int(result.rowcount or 0)
        total += deleted
        if deleted < PRUNE_CHUNK:
            return total


def run_process(container: Container, stop: threading.Event) -> None:
    """The relay (one per shard, each in its own process when sharded) and the mail
    dispatcher of one `python -m app.events.relay`, until `stop` is set."""
    from app.events.mail_dispatch import MailDispatcher

    dispatcher = threading.Thread(
        target=MailDispatcher(container, stop).run, name="mail-dispatcher", daemon=True
    )
    dispatcher.start()
    if container.config.relay_shards == 1:
        Relay(container.config, container.engine, stop).run()
    else:
        _run_shards(container.config.relay_shards, stop)
    dispatcher.join(timeout=10)


def sample_backlog(engine: Engine) -> None:
    """OutboxBacklog and OutboxOldestAge: the unsent events, and how long the oldest waits."""
    with engine.connect() as conn:
        backlog, oldest_age = conn.execute(BACKLOG).one()
    metrics.gauge("OutboxBacklog", backlog)
    metrics.gauge("OutboxOldestAge", float(oldest_age))


def _run_shards(shards: int, stop: threading.Event) -> None:
    """One child process per shard (one CPU each), restarted if it dies."""
    context = multiprocessing.get_context("spawn")
    children: dict[int, multiprocessing.process.BaseProcess] = {}
    while not stop.is_set():
        for shard in range(shards):
            child = children.get(shard)
            if child is None or not child.is_alive():
                if child is not None:
                    log.warning("relay shard exited; restarting",
                                extra={"shard": shard, "exitcode": child.exitcode})
                children[shard] = context.Process(target=_shard_main, args=(shard,),
                                                  name=f"relay-shard-{shard}")
                children[shard].start()
        stop.wait(1.0)
    for child in children.values():
        child.terminate()
    for child in children.values():
        child.join(timeout=30)


def _shard_main(shard: int) -> None:
    """Entry point of a shard's child process: its own container, the relay of one shard."""
    container = build()
    configure_logging(container.config.log_level)
    metrics.start("relay", container.config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the children
    Relay(container.config, container.engine, stop, shard).run()


def main() -> None:
    """Run until SIGINT or SIGTERM."""
    container = build()
    configure_logging(container.config.log_level)
    stop = threading.Event()

    def _stop(signum: int, _: FrameType | None) -> None:
        log.info("stopping relay", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    metrics.sampler(partial(sample_backlog, container.engine))
    metrics.start("relay", container.config)
    metrics.serve(container.config.metrics_port)
    log.info("relay started")
    run_process(container, stop)


if __name__ == "__main__":
    main()
