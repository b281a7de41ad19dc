"""Per-key rate limits: 429 problem+json with Retry-After and RateLimit-* headers."""

from __future__ import annotations

from flask import Flask

from app.bootstrap import Container
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
