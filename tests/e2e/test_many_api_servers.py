"""Two API servers (gunicorn on two ports) on one database, Redis and streaming replica:
idempotency, rate limits, the cache and key revocation hold across them, so nothing in the
API depends on one process."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import requests

from app.config import Config
from tests.e2e.conftest import own_database
from tests.e2e.stack import Client, Stack
from tests.servers import Cluster
from tests.support import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def servers(config: Config, streaming: tuple[Cluster, Cluster],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Stack]]:
    """Two APIs of one engine on the session's own primary and replica; a worker fleet."""
    primary, replica = streaming
    with own_database(replace(config, database_url=primary.url("se_two_apis"))) as own:
        database = own.database_url.rsplit("/", 1)[1]
        own = replace(own, database_replica_urls=replica.url(database, driver=""))
        logs = tmp_path_factory.mktemp("two-apis")
        first = Stack(own, logs / "first", web_workers=1)
        second = Stack(own, logs / "second", web_workers=1)
        with first.up("api", "worker"), second.up("api"):
            yield first, second


def both(servers: tuple[Stack, Stack], name: str, rate_limit: str | None = None
         ) -> tuple[Client, Client]:
    """A new tenant's test key, as a client of each server."""
    first, second = servers
    one = first.tenant(f"{name}-{uuid.uuid4().hex[:6]}", rate_limit)
    return one, Client(second.base_url, one.tenant_id, one.test_key, one.live_key)


def test_an_idempotency_key_holds_across_servers(servers: tuple[Stack, Stack]) -> None:
    one, two = both(servers, "idempotency")
    customer_id, method_id = one.customer_with_method()
    body = {"amount": 700, "currency": "usd", "customer_id": customer_id,
            "payment_method_id": method_id}
    key = uuid.uuid4().hex
    with ThreadPoolExecutor(2) as pool:
        raced = list(pool.map(lambda c: c.post("/pay", body, key), (one, two)))
    assert sorted(r.status_code for r in raced) in ([202, 202], [202, 409]), raced
    replays = [client.post("/pay", body, key) for client in (one, two, one, two)]
    assert {r.status_code for r in replays} == {202}
    assert {r.headers["Idempotent-Replayed"] for r in replays} == {"true"}
    payment_id = replays[0].json()["id"]
    assert {r.json()["id"] for r in replays + [r for r in raced if r.status_code == 202]} == {
        payment_id}
    eventually(lambda: two.ok(two.get(f"/payments/{payment_id}"), 200)["status"] == "succeeded",
               30, what="the payment to succeed")
    assert len(one.charges(payment_id)) == 1


def test_a_rate_limit_is_one_budget_across_servers(servers: tuple[Stack, Stack]) -> None:
    one, two = both(servers, "limited", rate_limit="10/minute")
    statuses = Counter(client.get("/customers").status_code for client in (one, two) * 8)
    assert statuses == Counter({200: 10, 429: 6})


def test_a_write_through_one_server_is_read_at_once_through_the_other(
    servers: tuple[Stack, Stack], streaming: tuple[Cluster, Cluster]
) -> None:
    one, two = both(servers, "reads")
    plan_body = {"code": "pro", "name": "Pro", "amount": 1500, "currency": "usd",
                 "interval": "month"}
    plan = one.ok(one.post("/plans", plan_body), 201)
    assert two.ok(two.get(f"/plans/{plan['id']}"), 200)["archived"] is False  # now cached
    replica = streaming[1]
    replica.scalar("SELECT pg_wal_replay_pause()")
    try:
        for _ in range(3):
            customer = one.ok(one.post("/customers", {"name": "Grace"}), 201)
            assert two.ok(two.get(f"/customers/{customer['id']}"), 200)["name"] == "Grace"
        one.ok(one.post(f"/plans/{plan['id']}/archive", {}), 200)
        assert two.ok(two.get(f"/plans/{plan['id']}"), 200)["archived"] is True
    finally:
        replica.scalar("SELECT pg_wal_replay_resume()")


def test_a_revoked_key_is_refused_by_every_server_within_2_seconds(
    servers: tuple[Stack, Stack]
) -> None:
    first = servers[0]
    one, two = both(servers, "revoked")
    for client in (one, two, one, two):  # both servers know the key (and the cache has it)
        client.ok(client.get("/customers"), 200)
    listed = json.loads(first.cli("keys", "list", one.tenant_id, "--json"))
    # A rotation: the new test key works on both servers beside the old one ...
    rotated = json.loads(first.cli("keys", "create", one.tenant_id, "--mode", "test", "--json"))
    new = [Client(c.base_url, one.tenant_id, rotated["key"], one.live_key) for c in (one, two)]
    for client in new:
        client.ok(client.get("/customers"), 200)
    # ... then the old one is revoked.
    first.cli("keys", "revoke", next(k["id"] for k in listed if not k["livemode"]))

    def refused() -> bool:
        return all(c.get("/customers").status_code == 401 for c in (one, two))

    eventually(refused, 2.0, what="both servers to refuse the revoked key")
    for client in new:
        client.ok(client.get("/customers"), 200)
    live = requests.get(f"{two.base_url}/customers", timeout=10,
                        headers={"Authorization": f"Bearer {one.live_key}"})
    assert live.status_code == 200
