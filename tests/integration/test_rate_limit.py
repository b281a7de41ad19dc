"""Per-key rate limits: 429 problem+json with Retry-After and RateLimit-* headers."""

from __future__ import annotations

import uuid
from dataclasses import replace

from flask import Flask
from werkzeug.test import TestResponse

from app.api import create_app
from app.bootstrap import Container
from app.config import Config
from tests.integration.checks import assert_problem, rows
from tests.support import Api


def test_a_key_over_its_budget_gets_429_and_others_do_not(
    app: Flask, container: Container
) -> None:
    limited = Api.for_new_tenant(app, rate_limit="5/minute")
    bystander = Api.for_new_tenant(app, rate_limit="5/minute")
    remaining = []
    for _ in range(5):
        response = limited.get("/customers")
        limited.ok(response, 200)
        assert response.headers["RateLimit-Limit"] == "5"
        assert 0 < int(response.headers["RateLimit-Reset"]) <= 61
        assert "Retry-After" not in response.headers
        remaining.append(int(response.headers["RateLimit-Remaining"]))
    assert remaining == [4, 3, 2, 1, 0]

    before = rows(container, limited.tenant_id)
    for method, path, body in (("GET", "/customers", None), ("POST", "/customers", {"name": "A"}),
                               ("GET", "/payments/pay_missing", None)):
        response = limited.request(method, path, body)
        assert_problem(response, 429, "rate_limited")
        assert 0 < int(response.headers["Retry-After"]) <= 61
        assert response.headers["RateLimit-Limit"] == "5"
        assert response.headers["RateLimit-Remaining"] == "0"
        assert 0 < int(response.headers["RateLimit-Reset"]) <= 61
    assert rows(container, limited.tenant_id) == before

    # Another tenant, and the same tenant's other key, have budgets of their own.
    bystander.ok(bystander.get("/customers"), 200)
    live = limited.get("/customers", key=limited.live_key)
    limited.ok(live, 200)
    assert live.headers["RateLimit-Remaining"] == "4"
    # Public endpoints are not limited.
    assert limited.client.get("/healthz").status_code == 200


def test_the_default_limit_is_announced(api: Api) -> None:
    response = api.get("/customers")
    api.ok(response, 200)
    limit = int(response.headers["RateLimit-Limit"])
    assert int(response.headers["RateLimit-Remaining"]) == limit - 1


def test_provider_webhooks_are_limited_per_client_address(config: Config) -> None:
    """/webhooks/* need no API key, so their budget is per client address."""
    app = create_app(replace(config, webhook_rate_limit="3/minute",
                             redis_namespace=f"{config.redis_namespace}-{uuid.uuid4().hex[:6]}"))
    client = app.test_client()

    def deliver(address: str) -> TestResponse:
        return client.post("/webhooks/stripe", data=b"{}", content_type="application/json",
                           environ_base={"REMOTE_ADDR": address})

    assert [deliver("192.0.2.1").status_code for _ in range(3)] == [200, 200, 200]
    limited = deliver("192.0.2.1")
    assert_problem(limited, 429, "rate_limited")
    assert 0 < int(limited.headers["Retry-After"]) <= 61
    assert deliver("192.0.2.2").status_code == 200  # another address has its own budget
    assert client.get("/healthz").status_code == 200  # other public endpoints are not limited


def test_a_tenant_with_several_limits_is_told_the_tightest(app: Flask) -> None:
    """The headers report the limit in the smallest window until one is exhausted; the 429
    reports the exhausted one, and no request over it reaches the view."""
    api = Api.for_new_tenant(app, rate_limit="3/minute;50/hour")
    seen = []
    for _ in range(3):
        response = api.get("/customers")
        api.ok(response, 200)
        seen.append((response.headers["RateLimit-Limit"],
                     response.headers["RateLimit-Remaining"]))
        assert 0 < int(response.headers["RateLimit-Reset"]) <= 61
    assert seen == [("3", "2"), ("3", "1"), ("3", "0")]
    limited = api.post("/customers", {"name": "A"})
    assert_problem(limited, 429, "rate_limited")
    assert limited.headers["RateLimit-Limit"] == "3"
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert 0 < int(limited.headers["Retry-After"]) <= 61
