"""The outbox relay against a real Tansu broker: every type, keys, order, gaps, several relays."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import func, select, text

from app.bootstrap import Container
from app.config import Config
from app.events import outbox
from app.events.embedded_broker import EmbeddedBroker
from app.events.relay import prune
from app.ids import new_id
from app.models import OutboxEvent
from tests.eventing import (
    SUBSCRIPTION_TYPES,
    Collector,
    RelayThread,
    assert_valid,
    broker,  # noqa: F401 - fixture
    first_occurrences,
    kafka_config,
    outbox_order,
    per_key,
    record,
    subscription_object,
)
from tests.support import Api, eventually


@pytest.fixture(scope="module")
def relay_config(config: Config, broker: EmbeddedBroker) -> Config:  # noqa: F811
    return kafka_config(config, broker)


@pytest.fixture(scope="module")
def relay(relay_config: Config) -> Iterator[RelayThread]:
    running = RelayThread(relay_config).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def collector(relay_config: Config) -> Iterator[Collector]:
    consuming = Collector(relay_config)
    yield consuming
    consuming.close()


def test_every_event_type_arrives_keyed_in_order_and_valid(
    api: Api, worker: Any, container: Container, relay: RelayThread, collector: Collector
) -> None:
    succeeded = api.settled(api.pay("tok_ok")["id"])
    refund = api.ok(api.post(f"/payments/{succeeded['id']}/refunds", {"amount": 500}), 201)
    failed = api.settled(api.pay("tok_decline")["id"])
    action = api.settled(api.pay("tok_action")["id"])
    eventually(lambda: api.ok(api.get(f"/payments/{succeeded['id']}"), 200)["amount_refunded"]
               == 500, what=f"refund {refund['id']}")
    customer = api.customer()
    subscription_id = new_id("sub")
    for event_type, status in SUBSCRIPTION_TYPES:
        obj = subscription_object(customer["id"], status, id=subscription_id)
        record(container, event_type, obj, api.tenant_id)
    api.ok(api.post(f"/customers/{customer['id']}", {"metadata": {"tier": "gold"}}), 200)
    api.payment_method(customer["id"])
    api.ok(api.request("DELETE", f"/customers/{customer['id']}"), 200)

    expected = outbox_order(container, api.tenant_id)
    all_ids = {event_id for ids in expected.values() for event_id in ids}
    messages = [m for m in collector.wait_for(all_ids) if m.event["id"] in all_ids]

    types = {m.event["type"] for m in messages}
    assert types == {"payment.created", "payment.succeeded", "payment.failed",
                     "payment.requires_action", "payment.refunded",
                     *(t for t, _ in SUBSCRIPTION_TYPES), "customer.updated",
                     "payment_method.detached", "customer.deleted"}
    topics = {"payment": "billing.payments", "subscription": "billing.subscriptions",
              "customer": "billing.customers", "payment_method": "billing.customers"}
    for message in messages:
        assert_valid(message.event)
        obj = message.event["data"]["object"]
        kind = message.event["type"].split(".")[0]
        assert message.key == (obj["customer_id"] if kind == "payment_method" else obj["id"])
        assert message.topic == topics[kind]
        assert message.event["tenant_id"] == api.tenant_id
    assert per_key(first_occurrences(messages)) == expected
    assert {failed["id"], action["id"], subscription_id} <= set(expected)


def test_value_is_the_stored_payload(
    api: Api, container: Container, relay: RelayThread, collector: Collector
) -> None:
    customer = api.customer(metadata={"ünïcode": "✓ 💳", "quote": "\"'"})
    obj = subscription_object(customer["id"], "active", metadata=customer["metadata"])
    event_id = record(container, "subscription.renewed", obj, api.tenant_id)
    [message] = [m for m in collector.wait_for({event_id}) if m.event["id"] == event_id]
    with container.uow() as uow:
        stored = uow.session.scalar(select(OutboxEvent.payload).where(
            OutboxEvent.event_id == event_id))
    assert message.event == stored
    assert message.event["data"]["object"]["metadata"]["ünïcode"] == "✓ 💳"


def test_a_row_committed_after_a_higher_id_is_not_skipped(
    api: Api, container: Container, relay: RelayThread, collector: Collector
) -> None:
    customer = api.customer()
    slow = container.uow().__enter__()
    try:
        early_id = outbox.record(slow.session, "subscription.created",
                                 subscription_object(customer["id"], "incomplete"),
                                 tenant_id=api.tenant_id, livemode=False)
        slow.flush()  # inserted: it takes the lower id, stays uncommitted
        late_id = record(container, "subscription.created",
                         subscription_object(customer["id"], "incomplete"), api.tenant_id)
        collector.wait_for({late_id})
        assert early_id not in collector.ids()
        slow.commit()
    finally:
        slow.__exit__(None, None, None)
    with container.uow() as uow:
        ids = [uow.session.scalar(select(OutboxEvent.id).where(OutboxEvent.event_id == event_id))
               for event_id in (early_id, late_id)]
    assert ids[0] < ids[1]
    collector.wait_for({early_id})


def test_several_relays_keep_order_per_key_under_concurrent_writers(
    api: Api, container: Container, relay_config: Config, relay: RelayThread,
    collector: Collector,
) -> None:
    others = [RelayThread(relay_config).start() for _ in range(2)]
    customer = api.customer()
    keys = [new_id("sub") for _ in range(20)]
    statuses = [s for _, s in SUBSCRIPTION_TYPES]

    def write(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            key = rng.choice(keys)
            record(container, "subscription.plan_changed",
                   subscription_object(customer["id"], rng.choice(statuses), id=key),
                   api.tenant_id)

    writers = [threading.Thread(target=write, args=(seed,)) for seed in range(4)]
    for writer in writers:
        writer.start()
    relay.stop()  # the active relay goes away mid-stream; a standby takes over
    for writer in writers:
        writer.join()
    expected = outbox_order(container, api.tenant_id)
    all_ids = {e for k in keys for e in expected.get(k, [])}
    assert len(all_ids) == 240
    messages = [m for m in collector.wait_for(all_ids, timeout=60) if m.event["id"] in all_ids]
    assert per_key(first_occurrences(messages)) == {k: expected[k] for k in keys if k in expected}
    for other in others:
        other.stop()
    relay.stop_event.clear()
    relay.start()


def test_sharded_relays_split_the_keys_and_keep_their_order(
    api: Api, container: Container, relay_config: Config, relay: RelayThread,
    collector: Collector,
) -> None:
    relay.stop()
    sharded = replace(relay_config, relay_shards=2)
    shards = [RelayThread(sharded, shard).start() for shard in (0, 1, 1)]  # shard 1 has a standby
    try:
        customer = api.customer()
        keys = [new_id("sub") for _ in range(10)]
        for step in range(5):
            for key in keys:
                record(container, "subscription.plan_changed",
                       subscription_object(customer["id"], "active", id=key,
                                           metadata={"step": str(step)}), api.tenant_id)
        expected = outbox_order(container, api.tenant_id)
        wanted = {e for k in keys for e in expected[k]}
        messages = [m for m in collector.wait_for(wanted) if m.event["id"] in wanted]
        assert per_key(first_occurrences(messages)) == {k: expected[k] for k in keys}
    finally:
        for shard in shards:
            shard.stop()
        relay.stop_event.clear()
        relay.start()


def test_sent_rows_are_pruned_after_retention_unless_mail_is_pending(
    api: Api, container: Container, relay: RelayThread, collector: Collector
) -> None:
    customer = api.customer()
    plain = record(container, "subscription.paused",
                   subscription_object(customer["id"], "paused"), api.tenant_id)
    mail = record(container, "subscription.canceled",
                  subscription_object(customer["id"], "canceled"), api.tenant_id)
    collector.wait_for({plain, mail})

    def sent() -> bool:
        with container.uow() as uow:
            return uow.session.scalar(select(func.count()).where(
                OutboxEvent.event_id.in_([plain, mail]), OutboxEvent.sent_at.is_not(None))) == 2

    eventually(sent, what="both rows marked sent")
    with container.engine.connect() as conn:
        conn.execute(text("UPDATE outbox_events SET mail_enqueued_at = NULL"
                          " WHERE event_id = :e"), {"e": mail})
        conn.commit()
        prune(conn, retention_hours=1)  # nothing of ours is an hour old
        with container.uow() as uow:
            assert uow.session.scalar(select(func.count()).where(
                OutboxEvent.event_id.in_([plain, mail]))) == 2
        prune(conn, retention_hours=0)
    with container.uow() as uow:
        left = uow.session.scalars(select(OutboxEvent.event_id).where(
            OutboxEvent.event_id.in_([plain, mail]))).all()
    assert left == [mail]
