"""Operations endpoints: health, readiness with a dependency down, metrics, OpenAPI, docs."""

from __future__ import annotations

import dataclasses
import re

import pytest
from flask import Flask

from app.api import create_app, schemas
from app.bootstrap import Container
from app.config import Config
from tests.integration.checks import assert_problem, rows
from tests.support import Api

CLOSED_DB = "postgresql+psycopg2://postgres@127.0.0.1:1/nothing"
CLOSED_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def no_database(config: Config) -> Flask:
    return create_app(dataclasses.replace(config, database_url=CLOSED_DB))


@pytest.fixture(scope="module")
def no_redis(config: Config) -> Flask:
    return create_app(dataclasses.replace(config, redis_url=CLOSED_REDIS))


def test_healthz(app: Flask) -> None:
    response = app.test_client().get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_when_everything_answers(app: Flask) -> None:
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"postgresql": "ok", "redis": "ok"}


@pytest.mark.parametrize(("broken", "part", "fine"), [
    ("no_database", "postgresql", "redis"), ("no_redis", "redis", "postgresql"),
])
def test_readyz_names_the_part_that_is_down(
    request: pytest.FixtureRequest, broken: str, part: str, fine: str
) -> None:
    app: Flask = request.getfixturevalue(broken)
    problem = assert_problem(app.test_client().get("/readyz"), 503)
    assert part in problem["detail"] and fine not in problem["detail"]
    assert [e["field"] for e in problem["errors"]] == [part]
    assert app.test_client().get("/healthz").status_code == 200


def test_a_request_needing_the_database_gets_503(no_database: Flask) -> None:
    client = no_database.test_client()
    headers = {"Authorization": "Bearer sk_test_whatever"}
    problem = assert_problem(client.get("/customers", headers=headers), 503,
                             "dependency_unavailable")
    assert "postgresql" in problem["detail"]
    response = client.post("/customers", json={"name": "A"}, headers=headers)
    assert_problem(response, 503, "dependency_unavailable")


def test_a_request_needing_redis_gets_503_and_writes_nothing(
    no_redis: Flask, app: Flask, container: Container
) -> None:
    api = Api.for_new_tenant(app)
    broken = Api(no_redis.test_client(), api.tenant_id, api.test_key, api.live_key)
    before = rows(container, api.tenant_id)
    problem = assert_problem(broken.post("/customers", {"name": "A"}), 503,
                             "dependency_unavailable")
    assert "redis" in problem["detail"]
    assert_problem(broken.get("/customers"), 503, "dependency_unavailable")
    assert rows(container, api.tenant_id) == before


def _documented_operations(app: Flask) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every API route; ops and static files are not API."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("ops."):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        found |= {(m.lower(), path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    return found


def test_openapi_documents_every_endpoint(app: Flask) -> None:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    operations = {(m, p) for p, item in document["paths"].items() for m in item}
    assert operations == _documented_operations(app)
    assert ("post", "/pay") in operations
    pay = document["paths"]["/pay"]["post"]
    key = next(p for p in pay["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header" and key["required"] is True
    components = document["components"]["schemas"]
    assert set(components["Payment"]["properties"]) == set(schemas.Payment.model_fields)
    assert set(components["PayRequest"]["properties"]) == set(schemas.PayRequest.model_fields)
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', response.get_data(as_text=True)))
    assert refs <= set(components)


def test_openapi_is_a_valid_3_1_document(app: Flask) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(app.test_client().get("/openapi.json").get_json())


def test_docs_render_the_document(app: Flask) -> None:
    """Served offline (a real browser renders it: tests/e2e/test_openapi_e2e.py)."""
    client = app.test_client()
    page = client.get("/docs", follow_redirects=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/openapi.json" in html and "swagger-ui" in html.lower()
    assets = re.findall(r'(?:src|href)="(/docs/[^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert "//" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', html))  # no CDN


def test_openapi_says_what_the_engine_enforces(app: Flask) -> None:
    document = app.test_client().get("/openapi.json").get_json()
    components = document["components"]["schemas"]
    currency = components["PayRequest"]["properties"]["currency"]
    assert "usd" in currency["enum"] and "USD" not in currency["enum"]
    key = next(p for p in document["paths"]["/pay"]["post"]["parameters"]
               if p["name"] == "Idempotency-Key")
    assert re.fullmatch(key["schema"]["pattern"], "a" * 255)
    assert not re.fullmatch(key["schema"]["pattern"], "a" * 256)
    for status in ("409", "422"):
        assert "Idempotency-Key" in document["paths"]["/pay"]["post"]["responses"][status][
            "description"]
    for path in ("/webhooks/stripe", "/webhooks/paypal"):
        operation = document["paths"][path]["post"]
        assert operation["security"] == [] and "401" not in operation["responses"]
    assert document["paths"]["/customers"]["post"]["requestBody"]["required"] is False
    assert document["paths"]["/pay"]["post"]["requestBody"]["required"] is True
    frozen = components["TestClockRequest"]["properties"]["frozen_time"]
    assert (frozen["type"], frozen["format"]) == ("string", "date-time")


@pytest.mark.parametrize("value", [0, 1700000000, "1970-01-01", "2026-01-31 00:00:00Z",
                                   "2026-01-31T00:00:00", "2026-02-30T00:00:00Z", None])
def test_times_are_rfc_3339_strings_only(api: Api, value: object) -> None:
    response = api.post("/test-clocks", {"frozen_time": value})
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.get_json()["errors"][0]["field"] == "frozen_time"
    clock = api.ok(api.post("/test-clocks", {"frozen_time": "2026-01-31T01:00:00+01:00"}), 201)
    assert clock["frozen_time"] == "2026-01-31T00:00:00Z"
