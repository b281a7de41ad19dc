"""Authentication and tenant confinement: keys, modes, other tenants' ids, public endpoints."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import update

from app.bootstrap import Container
from app.models import ApiKey
from app.services.tenants import hash_key
from tests.integration.checks import assert_problem, rows
from tests.support import Api, eventually

PROTECTED = [
    ("GET", "/customers"),
    ("GET", "/customers/cus_missing"),
    ("POST", "/customers"),
    ("POST", "/customers/cus_missing/payment-methods"),
    ("GET", "/payments"),
    ("GET", "/payments/pay_missing"),
    ("POST", "/pay"),
    ("POST", "/payments/pay_missing/refunds"),
    ("GET", "/sandbox/charges"),
]
BAD_HEADERS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Bearer    ",
    "Basic dXNlcjpwYXNz",
    "Token sk_test_abc",
    "sk_test_abc",
    "Bearer sk_test_unknown",
    "Bearer sk_live_unknown",
    "Bearer " + "x" * 5000,
]


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_without_a_valid_key_every_endpoint_answers_401(app: Flask, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in PROTECTED:
        body = {"amount": 1999, "currency": "usd"} if method == "POST" else None
        response = app.test_client().open(path, method=method, headers=headers, json=body)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_401_comes_before_validation_and_writes_nothing(app: Flask, container: Container) -> None:
    before = rows(container, "ten_none")
    response = app.test_client().post(
        "/customers", json={"name": "x" * 10_000}, headers={"Authorization": "Bearer nope"}
    )
    assert_problem(response, 401)
    assert rows(container, "ten_none") == before


def test_a_revoked_key_is_refused(api: Api, container: Container) -> None:
    api.ok(api.get("/customers"), 200)
    with container.uow() as uow:
        uow.session.execute(
            update(ApiKey)
            .where(ApiKey.tenant_id == api.tenant_id, ApiKey.livemode.is_(False))
            .values(revoked_at=datetime.now(UTC))
        )
        uow.commit()
    container.cache.invalidate_api_key(hash_key(api.test_key))  # as `keys revoke` does
    # The app is another process than the revoker: within 2 seconds, as the contract says.
    eventually(lambda: api.get("/customers").status_code == 401, 2.0,
               what="the revoked key to be refused")
    assert_problem(api.get("/customers"), 401, "unauthorized")
    api.ok(api.get("/customers", key=api.live_key), 200)


def test_the_scheme_is_case_insensitive(api: Api) -> None:
    response = api.client.get("/customers", headers={"Authorization": f"bearer {api.test_key}"})
    api.ok(response, 200)


def test_keys_never_reach_the_logs(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    unknown = "sk_test_" + uuid.uuid4().hex
    with caplog.at_level(logging.DEBUG):
        api.get("/customers")
        api.get("/customers", key=unknown)
        api.pay("tok_ok")
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert api.test_key not in logged
    assert unknown not in logged


def test_test_and_live_modes_do_not_see_each_other(api: Api) -> None:
    test_customer = api.customer()
    live_customer = api.customer(key=api.live_key)
    assert test_customer["livemode"] is False
    assert live_customer["livemode"] is True

    assert_problem(api.get(f"/customers/{test_customer['id']}", key=api.live_key), 404)
    assert_problem(api.get(f"/customers/{live_customer['id']}"), 404)
    test_ids = [c["id"] for c in api.ok(api.get("/customers"), 200)["data"]]
    live_ids = [c["id"] for c in api.ok(api.get("/customers", key=api.live_key), 200)["data"]]
    assert test_ids == [test_customer["id"]]
    assert live_ids == [live_customer["id"]]

    payment = api.pay("tok_decline")
    assert_problem(api.get(f"/payments/{payment['id']}", key=api.live_key), 404)
    assert api.ok(api.get("/payments", key=api.live_key), 200)["data"] == []
    refund = api.post(f"/payments/{payment['id']}/refunds", {}, key=api.live_key)
    assert_problem(refund, 404)
    attach = api.post(
        f"/customers/{test_customer['id']}/payment-methods",
        {"provider": "sandbox", "token": "tok_ok"},
        key=api.live_key,
    )
    assert_problem(attach, 404)


def test_a_live_key_gets_403_on_the_sandbox(api: Api, container: Container) -> None:
    live_customer = api.customer(key=api.live_key)
    before = rows(container, api.tenant_id)
    attach = api.post(
        f"/customers/{live_customer['id']}/payment-methods",
        {"provider": "sandbox", "token": "tok_ok"},
        key=api.live_key,
    )
    assert_problem(attach, 403, "test_mode_only")
    assert_problem(api.get("/sandbox/charges", key=api.live_key), 403, "test_mode_only")
    assert rows(container, api.tenant_id) == before


def _same_as_missing(
    theirs: dict[str, object], missing: dict[str, object], ids: tuple[str, str]
) -> None:
    """A foreign id's 404 is the missing id's 404, word for word but for the id itself."""
    assert set(theirs) == set(missing)
    for field, value in missing.items():
        assert theirs[field] == (value.replace(ids[1], ids[0]) if isinstance(value, str) else value)


def test_another_tenants_ids_answer_404_exactly_as_missing_ids(app: Flask, api: Api) -> None:
    other = Api.for_new_tenant(app)
    payment = other.pay("tok_decline")
    their = {
        "customer": payment["customer_id"],
        "payment": payment["id"],
    }
    missing = {kind: f"{value[:-6]}zzzzzz" for kind, value in their.items()}
    cases = [
        ("GET", "/customers/{customer}", None),
        ("GET", "/payments/{payment}", None),
        ("POST", "/payments/{payment}/refunds", {}),
        ("POST", "/customers/{customer}/payment-methods", {"provider": "sandbox",
                                                          "token": "tok_ok"}),
    ]
    for method, template, body in cases:
        theirs = assert_problem(api.request(method, template.format(**their), body), 404)
        absent = assert_problem(api.request(method, template.format(**missing), body), 404)
        kind = "payment" if "{payment}" in template else "customer"
        _same_as_missing(theirs, absent, (their[kind], missing[kind]))
    # Their objects do not show in our lists either.
    assert api.ok(api.get("/payments"), 200)["data"] == []
    assert api.ok(api.get("/customers"), 200)["data"] == []
    assert api.ok(api.get(f"/payments?customer_id={their['customer']}"), 200)["data"] == []


def test_paying_with_another_tenants_customer_or_method_is_404(
    app: Flask, api: Api, container: Container
) -> None:
    other = Api.for_new_tenant(app)
    their_customer = other.customer()
    their_method = other.payment_method(their_customer["id"])
    mine = api.customer()
    my_method = api.payment_method(mine["id"])
    before = rows(container, api.tenant_id)
    for customer_id, method_id in (
        (their_customer["id"], their_method["id"]),
        (mine["id"], their_method["id"]),
        (their_customer["id"], my_method["id"]),
    ):
        body = {"amount": 100, "currency": "usd", "customer_id": customer_id,
                "payment_method_id": method_id}
        response = api.post("/pay", body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert_problem(response, 404, "resource_missing")
    assert rows(container, api.tenant_id) == before
    assert other.ok(other.get(f"/customers/{their_customer['id']}"), 200)["id"]


def test_a_method_of_another_customer_of_the_same_tenant_is_refused(
    api: Api, container: Container
) -> None:
    first, second = api.customer(), api.customer()
    method = api.payment_method(first["id"])
    before = rows(container, api.tenant_id)
    body = {"amount": 100, "currency": "usd", "customer_id": second["id"],
            "payment_method_id": method["id"]}
    response = api.post("/pay", body, headers={"Idempotency-Key": uuid.uuid4().hex})
    problem = assert_problem(response, 422)
    assert {e["field"] for e in problem["errors"]} == {"payment_method_id"}
    assert rows(container, api.tenant_id) == before


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"])
def test_public_endpoints_need_no_key(app: Flask, path: str) -> None:
    response = app.test_client().get(path)
    assert response.status_code == 200, response.get_data(as_text=True)


def test_webhooks_are_not_behind_api_keys(app: Flask) -> None:
    response = app.test_client().post("/webhooks/stripe", data=b"{}",
                                      content_type="application/json")
    assert response.status_code != 401
    assert response.status_code < 500


def test_a_public_path_in_the_query_does_not_open_an_endpoint(app: Flask) -> None:
    assert_problem(app.test_client().get("/customers?next=/healthz"), 401)
