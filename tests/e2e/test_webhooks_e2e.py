"""Webhooks out end to end: API, workers, scheduler, outbox relay, the real Kafka broker, the
webhook dispatcher, and a merchant's receiver on this machine, all over real connections."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from standardwebhooks import Webhook

from app.config import Config
from app.events.embedded_broker import EmbeddedBroker
from tests.e2e.conftest import own_database
from tests.e2e.stack import Client, Stack
from tests.eventing import broker, kafka_config  # noqa: F401 - the module's broker fixture
from tests.receiver import Receiver, receiving
from tests.support import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    # Two sending slots at 8 s a try: at most about 15 tries a minute reach the slow endpoint.
    yield from receiving(slow_seconds=8.0)


@pytest.fixture(scope="module")
def hooks_stack(
    config: Config, broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
) -> Iterator[Stack]:
    base = replace(kafka_config(config, broker), webhooks_allow_private_networks=True)
    with own_database(base) as own:
        with Stack(own, tmp_path_factory.mktemp("webhooks-e2e")).up(
                "api", "worker", "scheduler", "relay", "webhooks") as running:
            yield running


@pytest.fixture()
def merchant(hooks_stack: Stack) -> Client:
    return hooks_stack.tenant("webhooks")


def subscribe(client: Client, url: str, types: list[str] | None = None) -> dict[str, Any]:
    return client.ok(client.post("/webhook-endpoints",
                                 {"url": url, "event_types": types or ["*"]}), 201)


def paid(client: Client, count: int = 1) -> list[str]:
    """Payment ids of `count` tok_ok payments, once each has succeeded."""
    customer_id, method_id = client.customer_with_method()
    ids = [client.ok(client.pay(customer_id, method_id), 202)["id"] for _ in range(count)]
    for payment_id in ids:
        eventually(lambda p=payment_id: client.ok(client.get(f"/payments/{p}"), 200)["status"]
                   == "succeeded", 30, what=f"{payment_id} to succeed")
    return ids


def events_of(stack: Stack, tenant_id: str) -> set[str]:
    """Ids of every event the engine wrote for this tenant."""
    rows = stack.rows("SELECT event_id FROM outbox_events WHERE payload->>'tenant_id' = :t",
                      t=tenant_id)
    return {row.event_id for row in rows}


def test_events_arrive_signed(merchant: Client, receiver: Receiver) -> None:
    endpoint = subscribe(merchant, receiver.url("/ok"), ["payment.created", "payment.succeeded"])
    [payment_id] = paid(merchant)

    def mine() -> list[dict[str, Any]]:
        verified = [Webhook(endpoint["secret"]).verify(hit.body, hit.headers)
                    for hit in receiver.on("/ok")]
        return [e for e in verified if e["data"]["object"]["id"] == payment_id]

    got = eventually(lambda: len(mine()) == 2 and mine(), 20, what="both events delivered")
    by_type = {e["type"]: e for e in got}  # delivery order is not promised: dedupe on id
    assert set(by_type) == {"payment.created", "payment.succeeded"}
    assert by_type["payment.succeeded"]["data"]["object"]["status"] == "succeeded"


def test_a_500_is_retried_about_5_seconds_later_with_the_same_id(
    merchant: Client, receiver: Receiver
) -> None:
    endpoint = subscribe(merchant, receiver.url("/fail-first"), ["payment.succeeded"])
    paid(merchant)
    hits = eventually(lambda: len(receiver.on("/fail-first")) >= 2 and receiver.on("/fail-first"),
                      30, what="the retry")
    first, second = [h for h in hits if h.headers["webhook-id"] == hits[0].headers["webhook-id"]]
    assert 4.0 <= second.at - first.at <= 9.0, second.at - first.at

    def delivered() -> dict[str, Any] | None:
        [delivery] = merchant.ok(
            merchant.get(f"/webhook-endpoints/{endpoint['id']}/deliveries"), 200)["data"]
        return delivery if delivery["status"] == "succeeded" else None

    delivery = eventually(delivered, 10, what="the delivery to succeed")
    assert (delivery["attempts"], delivery["last_status_code"]) == (2, 200)


def test_slow_and_dead_endpoints_do_not_delay_a_live_one(
    hooks_stack: Stack, merchant: Client, receiver: Receiver
) -> None:
    for path in ("/slow", "/dead", "/ok"):
        subscribe(merchant, receiver.url(path))
    before = len(receiver.on("/ok"))
    payment_ids = paid(merchant, 30)
    wanted = events_of(hooks_stack, merchant.tenant_id)
    assert len(wanted) >= 2 * len(payment_ids)

    def live_got_all() -> bool:
        return wanted <= {h.headers["webhook-id"] for h in receiver.on("/ok")[before:]}

    eventually(live_got_all, 60, what="every event at the live endpoint")
    slow = {h.headers["webhook-id"] for h in receiver.on("/slow")} & wanted
    assert len(slow) < len(wanted), "the slow endpoint kept pace: the test shows nothing"


def test_a_dispatcher_killed_mid_stream_loses_nothing(
    hooks_stack: Stack, merchant: Client, receiver: Receiver
) -> None:
    subscribe(merchant, receiver.url("/ok"))
    customer_id, method_id = merchant.customer_with_method()
    for _ in range(3):
        for _ in range(10):
            merchant.ok(merchant.pay(customer_id, method_id), 202)
        hooks_stack.kill("webhooks")  # SIGKILL: no offset commit, no goodbye
        hooks_stack.start("webhooks")

    def all_delivered() -> bool:
        wanted = events_of(hooks_stack, merchant.tenant_id)
        got = {h.headers["webhook-id"] for h in receiver.on("/ok")}
        return len(wanted) >= 60 and wanted <= got

    eventually(all_delivered, 60, what="every event of 30 payments delivered")
