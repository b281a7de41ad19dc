"""The Redis cache: hits, invalidation after commit, no stale refill, Redis down or slow."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import update

from app.api import create_app
from app.bootstrap import Container
from app.cache import TIMEOUT_SECONDS, Cache, connect
from app.config import Config
from app.models import ApiKey, Tenant
from app.services.tenants import authenticate, hash_key
from tests.integration.checks import assert_problem
from tests.servers import SilentListener
from tests.support import Api, eventually


def cache_hits(kind: str) -> float:
    found = REGISTRY.get_sample_value("subscription_engine_cache_hits_total", {"cache": kind})
    return found or 0.0


def revoke_behind_the_engines_back(container: Container, api: Api) -> None:
    with container.uow() as uow:
        uow.session.execute(update(ApiKey).where(ApiKey.tenant_id == api.tenant_id)
                            .values(revoked_at=datetime.now(UTC)))
        uow.commit()


def test_a_key_is_answered_from_the_cache_until_it_is_invalidated(
    api: Api, container: Container
) -> None:
    api.ok(api.get("/customers"), 200)
    hits = cache_hits("api_key")
    revoke_behind_the_engines_back(container, api)
    api.ok(api.get("/customers"), 200)  # plain SQL: the cached entry still answers (TTL)
    assert cache_hits("api_key") == hits + 1
    container.cache.invalidate_api_key(hash_key(api.test_key))  # in another process than the app
    eventually(lambda: api.get("/customers").status_code == 401, 2.0,
               what="every process to refuse the key")
    assert_problem(api.get("/customers", key=api.live_key), 401)  # never cached: read fresh


def test_a_changed_rate_limit_applies_once_the_tenant_is_invalidated(
    api: Api, container: Container
) -> None:
    assert api.get("/customers").headers["RateLimit-Limit"] == "100"
    with container.uow() as uow:
        uow.session.execute(update(Tenant).where(Tenant.id == api.tenant_id)
                            .values(rate_limit="7/second"))
        uow.commit()
    container.cache.invalidate_tenant(api.tenant_id)
    eventually(lambda: api.get("/customers").headers["RateLimit-Limit"] == "7", 2.0,
               what="every process to apply the new limit")


def test_an_archived_plan_is_read_archived_at_once(api: Api) -> None:
    body = {"code": "gold", "name": "Gold", "amount": 900, "currency": "usd", "interval": "month"}
    plan = api.ok(api.post("/plans", body), 201)
    assert api.ok(api.get(f"/plans/{plan['id']}"), 200)["archived"] is False
    api.ok(api.post(f"/plans/{plan['id']}/archive"), 200)
    assert api.ok(api.get(f"/plans/{plan['id']}"), 200)["archived"] is True
    assert_problem(api.get("/plans/plan_missing"), 404)


def test_a_fill_that_read_before_an_invalidation_does_not_put_the_old_value_back(
    container: Container,
) -> None:
    cache = container.cache
    ident = f"ten_{time.monotonic_ns()}"

    def load_then_change() -> dict[str, object]:
        old = {"rate_limit": "1/second"}
        cache.invalidate_tenant(ident)  # the change commits while this fill is in flight
        return old

    assert cache.tenant(ident, load_then_change) == {"rate_limit": "1/second"}
    assert cache.tenant(ident, lambda: {"rate_limit": "2/second"}) == {"rate_limit": "2/second"}


@pytest.fixture()
def silent_redis() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung Redis)."""
    listener = SilentListener()
    yield listener.port
    listener.close()


def test_with_redis_down_or_hung_the_database_answers_quickly(
    api: Api, container: Container, silent_redis: int
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        down_port = closed.getsockname()[1]  # bound, not listening: connections are refused
        for port in (down_port, silent_redis):
            cache = Cache(connect(f"redis://127.0.0.1:{port}/0"), "se-test-dead", 60)
            started = time.monotonic()
            with container.uow() as uow:
                first = authenticate(uow.session, cache, api.test_key)
                for _ in range(20):  # within the bypass second: Redis is not asked again
                    assert authenticate(uow.session, cache, api.test_key) == first
                assert authenticate(uow.session, cache, "sk_test_unknown") is None
            assert first is not None and first.scope.tenant_id == api.tenant_id
            assert time.monotonic() - started < 2 * TIMEOUT_SECONDS + 0.5
            cache.invalidate_api_key(hash_key(api.test_key))  # logged, never raised


def test_a_detached_payment_method_is_refused_by_pay_at_once_through_every_process(
    api: Api, config: Config
) -> None:
    """A client's own change is read at once, also by another API process than the one
    that made it (here: another app, with a cache of its own)."""
    other = Api(create_app(config).test_client(), api.tenant_id, api.test_key, api.live_key)
    customer = api.customer()
    method = api.payment_method(customer["id"])
    body = {"amount": 300, "currency": "usd", "customer_id": customer["id"],
            "payment_method_id": method["id"]}
    for process in (api, other):  # both have read the method (and its owner)
        process.ok(process.post("/pay", body, headers={"Idempotency-Key": uuid.uuid4().hex}),
                   202)
    api.ok(api.request("DELETE", f"/customers/{customer['id']}/payment-methods/{method['id']}"),
           200)
    for process in (api, other):
        response = process.post("/pay", body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert_problem(response, 404)
