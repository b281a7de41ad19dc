"""Kafka killed during a burst of 1,000 payments: the API and charging go on, nothing is lost.

The embedded broker keeps messages in memory, so what it had acknowledged is gone after the
restart. To tell that loss apart from the relay's, the relay is frozen (SIGSTOP) for the
instant it takes a consumer to read everything the broker holds, then the broker is killed
with the relay's last batch possibly unacknowledged, and the relay thawed. Every event must
then arrive: before the kill, or re-sent to the restarted broker.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from app.bootstrap import Container
from app.config import Config
from app.events.embedded_broker import EmbeddedBroker
from app.models import OutboxEvent, Payment, PaymentStatus
from app.services.payments import create_payment
from app.services.scope import Scope
from tests.eventing import (
    Collector,
    Received,
    assert_valid,
    broker,  # noqa: F401 - fixture
    first_occurrences,
    kafka_config,
    outbox_order,
    relay_process,
)
from tests.support import Api, eventually

PAYMENTS = 1000


def burst(container: Container, tenant_id: str, customer_id: str, method_id: str,
          done: list[str], killed: threading.Event) -> None:
    """Take PAYMENTS payments through the payment service, ten per transaction: the second
    half only once the broker is `killed`, so that many are made during the outage however
    fast the first half went."""
    scope = Scope(tenant_id=tenant_id, livemode=False)
    for batch in range(PAYMENTS // 10):
        if batch == PAYMENTS // 20:
            killed.wait(120)
        with container.uow() as uow:
            payments = [
                create_payment(uow, scope, amount=1999,
                               currency="usd", customer_id=customer_id,
                               payment_method_id=method_id, description=None, metadata={})
                for _ in range(10)
            ]
            uow.commit()
        done.extend(payment.id for payment in payments)


def counts(container: Container, tenant_id: str) -> tuple[int, int]:
    """(unsent outbox rows, succeeded payments) of the tenant."""
    with container.uow() as uow:
        unsent = uow.session.scalar(select(func.count()).where(
            OutboxEvent.payload["tenant_id"].astext == tenant_id, OutboxEvent.sent_at.is_(None)))
        succeeded = uow.session.scalar(select(func.count()).where(
            Payment.tenant_id == tenant_id, Payment.status == PaymentStatus.SUCCEEDED))
    return int(unsent or 0), int(succeeded or 0)


def ordered_ids(before: list[Received], after: list[Received]) -> dict[str, list[str]]:
    """Per key, the event ids a deduping consumer kept: the first broker's, then the second's."""
    def by_offset(messages: list[Received]) -> list[Received]:
        return sorted(messages, key=lambda m: (m.topic, m.partition, m.offset))

    keys: dict[str, list[str]] = {}
    for message in first_occurrences(by_offset(before) + by_offset(after)):
        keys.setdefault(message.key, []).append(message.event["id"])
    return keys


def test_broker_killed_during_a_burst_of_1000_payments(
    app: Flask, config: Config, container: Container, worker: Any,
    broker: EmbeddedBroker, tmp_path: Path,  # noqa: F811
) -> None:
    api = Api.for_new_tenant(app)
    customer = api.ok(api.post("/customers", {"name": "No mail"}), 201)
    method = api.payment_method(customer["id"])
    relay = relay_process(kafka_config(config, broker), tmp_path / "relay.log")
    first = Collector(kafka_config(config, broker))
    second: Collector | None = None
    created: list[str] = []
    killed = threading.Event()
    sender = threading.Thread(
        target=burst,
        args=(container, api.tenant_id, customer["id"], method["id"], created, killed),
    )
    try:
        sender.start()
        eventually(lambda: sum(m.event["tenant_id"] == api.tenant_id
                               for m in first.snapshot()) >= 200,
                   30, what="the first 200 events in Kafka")

        os.kill(relay.pid, signal.SIGSTOP)
        eventually(lambda: first.caught_up(), 30, what="consumer to catch up")
        broker.kill()
        os.kill(relay.pid, signal.SIGCONT)
        first.close()
        unsent_at_kill, succeeded_at_kill = counts(container, api.tenant_id)
        killed.set()  # the burst's second half: payments made while Kafka is down

        def outage_absorbed() -> bool:
            unsent, succeeded = counts(container, api.tenant_id)
            return unsent >= unsent_at_kill + 100 and succeeded >= succeeded_at_kill + 50

        eventually(outage_absorbed, 60, what="payments to go on while Kafka is down")
        assert relay.poll() is None, (tmp_path / "relay.log").read_text()[-2000:]

        broker.start()
        second = Collector(kafka_config(config, broker))
        sender.join(timeout=120)
        assert len(created) == PAYMENTS
        expected = outbox_order(container, api.tenant_id)  # charging goes on meanwhile
        wanted = {event_id for ids in expected.values() for event_id in ids}
        assert len(expected) == PAYMENTS  # every payment's key, with its payment.created
        assert len(wanted) - PAYMENTS >= succeeded_at_kill + 50  # and the payment.succeeded
        before = [m for m in first.snapshot() if m.event["id"] in wanted]
        eventually(lambda: wanted <= {m.event["id"] for m in before} | second.ids(), 120,
                   what="every event after the restart")
        after = [m for m in second.snapshot() if m.event["id"] in wanted]

        assert {m.event["id"] for m in before} | {m.event["id"] for m in after} == wanted
        assert wanted - {m.event["id"] for m in before} <= {m.event["id"] for m in after}
        assert ordered_ids(before, after) == expected
        for message in before + after:
            assert_valid(message.event)
    finally:
        killed.set()
        if sender.is_alive():
            sender.join(timeout=120)
        relay.terminate()
        relay.wait(timeout=30)
        if second is not None:
            second.close()
