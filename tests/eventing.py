"""Helpers of the event and mail tests: a real broker, relays, a consumer group, an SMTP server.

Import the fixtures into a test module (`from tests.eventing import broker`); each is module
scoped, so at most one relay runs against the session database at a time.
"""

from __future__ import annotations

import email
import json
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email import policy
from email.message import Message
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from jsonschema import Draft202012Validator, FormatChecker
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import select, text

from app.bootstrap import Container, build
from app.clock import utcnow
from app.config import Config
from app.events import outbox
from app.events.embedded_broker import EmbeddedBroker
from app.events.kafka import client_settings
from app.events.outbox import TOPICS
from app.events.relay import Relay, ensure_topics
from app.ids import new_id
from app.models import OutboxEvent
from app.render import timestamp
from tests.conftest import child_env
from tests.servers import free_port
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "docs" / "events"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A Tansu broker of this module, on a free port."""
    started = EmbeddedBroker(port=free_port(), log=tmp_path_factory.mktemp("kafka") / "tansu.log")
    started.start()
    yield started
    started.stop()


def kafka_config(config: Config, broker: EmbeddedBroker, **overrides: Any) -> Config:
    """The session's settings pointed at `broker`, with short relay timings."""
    return replace(config, kafka_bootstrap_servers=broker.bootstrap, relay_poll_interval_ms=20,
                   relay_flush_timeout_seconds=1.0, **overrides)


@dataclass
class RelayThread:
    """A Relay of `config` running in a thread of the test process until stopped."""

    config: Config
    shard: int = 0
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> RelayThread:
        relay = Relay(self.config, build(self.config).engine, self.stop_event, self.shard)
        self.thread = threading.Thread(target=relay.run, name="relay", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        assert self.thread is not None
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "relay thread did not stop"


def relay_process(config: Config, log: Path) -> subprocess.Popen[bytes]:
    """`python -m app.events.relay` for `config`, in its own process group."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.events.relay"], env=child_env(config), cwd=ROOT,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


@dataclass
class Received:
    """A Kafka message as a consumer saw it."""

    topic: str
    partition: int
    offset: int
    key: str
    event: dict[str, Any]


class Collector:
    """A consumer-group member reading both topics in a thread, keeping every message."""

    def __init__(self, config: Config, group: str | None = None) -> None:
        """`config` says how to reach Kafka (servers, TLS), as the engine's clients do."""
        self.config = config
        ensure_topics(config)
        self.consumer = KafkaConsumer(
            *TOPICS.values(), **client_settings(config),
            group_id=group or f"test-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest",
            allow_auto_create_topics=False,
            enable_auto_commit=True, auto_commit_interval_ms=200,
        )
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            batch = self.consumer.poll(timeout_ms=100)
            with self.lock:
                for records in batch.values():
                    self.messages.extend(
                        Received(r.topic, r.partition, r.offset, r.key.decode(),
                                 json.loads(r.value))
                        for r in records
                    )

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.messages)

    def ids(self) -> set[str]:
        return {m.event["id"] for m in self.snapshot()}

    def wait_for(self, event_ids: set[str], timeout: float = 30.0) -> list[Received]:
        """Every message once all of `event_ids` have arrived."""
        eventually(lambda: event_ids <= self.ids(), timeout,
                   what=f"{len(event_ids)} events in Kafka")
        return self.snapshot()

    def caught_up(self) -> bool:
        """True when this consumer has read every message the broker holds right now.

        The end offsets come from a separate probe (a KafkaConsumer is not thread-safe).
        """
        probe = KafkaConsumer(**client_settings(self.config))
        try:
            partitions = [TopicPartition(topic, p) for topic in TOPICS.values()
                          for p in probe.partitions_for_topic(topic) or ()]
            ends: dict[TopicPartition, int] = probe.end_offsets(partitions)
        finally:
            probe.close()
        read: dict[TopicPartition, int] = {}
        for m in self.snapshot():
            tp = TopicPartition(m.topic, m.partition)
            read[tp] = max(read.get(tp, 0), m.offset + 1)
        return all(read.get(tp, 0) >= end for tp, end in ends.items())

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.consumer.close(autocommit=False)


@cache
def validator(event_type: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{event_type}.json").read_text())
    return Draft202012Validator(schema, format_checker=FormatChecker())


def assert_valid(event: dict[str, Any]) -> None:
    """The event matches the JSON Schema of its type in docs/events/."""
    errors = [f"{list(e.path)}: {e.message}" for e in validator(event["type"]).iter_errors(event)]
    assert not errors, (event["type"], errors)


def first_occurrences(messages: list[Received]) -> list[Received]:
    """The messages with duplicates (same event id) dropped, as a deduping consumer keeps."""
    seen: set[str] = set()
    kept = []
    for message in messages:
        if message.event["id"] not in seen:
            seen.add(message.event["id"])
            kept.append(message)
    return kept


def per_key(messages: list[Received]) -> dict[str, list[str]]:
    """Event ids of each key in the order a consumer read them (by partition offset)."""
    ordered = sorted(messages, key=lambda m: (m.topic, m.partition, m.offset))
    keys: dict[str, list[str]] = {}
    for message in ordered:
        keys.setdefault(message.key, []).append(message.event["id"])
    return keys


class Inbox:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self.lock:
            self.messages.append(email.message_from_bytes(content, policy=policy.default))
        return "250 OK"

    def to(self, recipient: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if m["To"] == recipient]


class SmtpServer:
    """A real SMTP server (aiosmtpd) on a free port that can go down and come back.

    With `tls`, it speaks TLS with that server context: from the first byte (`implicit`),
    or after STARTTLS, which it then requires before any mail.
    """

    def __init__(self, tls: ssl.SSLContext | None = None, implicit: bool = False) -> None:
        self.port = free_port()
        self.inbox = Inbox()
        self.controller: Controller | None = None
        self.tls = tls
        self.implicit = implicit

    def start(self) -> None:
        if self.tls is None:
            tls: dict[str, Any] = {}
        elif self.implicit:
            tls = {"ssl_context": self.tls}
        else:
            tls = {"tls_context": self.tls, "require_starttls": True}
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **tls)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


SUBSCRIPTION_TYPES = [
    ("subscription.created", "incomplete"), ("subscription.activated", "active"),
    ("subscription.trial_will_end", "trialing"), ("subscription.renewed", "active"),
    ("subscription.past_due", "past_due"), ("subscription.paused", "paused"),
    ("subscription.resumed", "active"), ("subscription.plan_changed", "active"),
    ("subscription.updated", "active"), ("subscription.canceled", "canceled"),
]


def subscription_object(customer_id: str, status: str, **fields: Any) -> dict[str, Any]:
    """A subscription as the API shows it (API.md), for events recorded directly."""
    now = timestamp(utcnow())
    return {
        "id": fields.pop("id", new_id("sub")), "object": "subscription",
        "customer_id": customer_id, "plan_id": new_id("plan"), "payment_method_id": new_id("pm"),
        "status": status, "current_period_start": now, "current_period_end": now,
        "billing_anchor": now, "trial_end": now if status == "trialing" else None,
        "cancel_at_period_end": False, "canceled_at": now if status == "canceled" else None,
        "cancellation_reason": "requested" if status == "canceled" else None,
        "paused_at": now if status == "paused" else None, "latest_payment_id": None,
        "created_at": now, "metadata": {}, **fields,
    }


def record(container: Container, event_type: str, obj: dict[str, Any], tenant_id: str,
           *, livemode: bool = False) -> str:
    """Write one event to the outbox in its own transaction, holding the key's lock as
    the services hold the object's row lock."""
    with container.uow() as uow:
        uow.session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": obj["id"]})
        event_id = outbox.record(uow.session, event_type, obj, tenant_id=tenant_id,
                                 livemode=livemode)
        uow.commit()
        return event_id


def outbox_order(container: Container, tenant_id: str) -> dict[str, list[str]]:
    """Event ids of each key of a tenant in outbox (commit) order."""
    with container.uow() as uow:
        rows = uow.session.execute(
            select(OutboxEvent.key, OutboxEvent.event_id)
            .where(OutboxEvent.payload["tenant_id"].astext == tenant_id)
            .order_by(OutboxEvent.id)
        ).all()
    keys: dict[str, list[str]] = {}
    for key, event_id in rows:
        keys.setdefault(key, []).append(event_id)
    return keys
