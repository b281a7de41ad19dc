"""Updating and deleting what a merchant made: customers, payment methods, subscriptions,
retrying a payment in dunning, reading refunds. Every refused request answers problem+json
and writes nothing; another tenant's or mode's id is 404; every change writes its event in
the same transaction; detaching reaches Stripe and PayPal (their simulators)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select

from app.bootstrap import Container
from app.ids import new_id
from app.models import (
    Customer,
    IdempotencyKey,
    SentMail,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.integration.test_subscription_api import problem
from tests.integration.test_subscriptions import (
    active_on_clock,
    advance,
    payments_of,
    plan,
    subscribe,
    wait_status,
)
from tests.sim.fixtures import Merchant, Sims
from tests.support import Api, outbox

NOT_JSON = {"data": "email=x", "content_type": "application/x-www-form-urlencoded"}


def types(container: Container, key: str) -> list[str]:
    return [event["type"] for event in outbox(container, key)]


def delete(api: Api, path: str, **kwargs: Any) -> Any:
    return api.request("DELETE", path, **kwargs)


def other_tenant(api: Api) -> Api:
    return Api.for_new_tenant(api.client.application)


# -- POST /customers/{id} -------------------------------------------------------------


def test_update_merges_metadata_and_removes_empty_keys(api: Api, container: Container) -> None:
    customer = api.customer(metadata={"a": "1", "b": "2"})
    updated = api.ok(api.post(f"/customers/{customer['id']}",
                              {"metadata": {"b": "", "c": "3"}, "name": "Ada L."}), 200)
    assert updated["metadata"] == {"a": "1", "c": "3"}
    assert (updated["name"], updated["email"]) == ("Ada L.", customer["email"])
    assert api.ok(api.get(f"/customers/{customer['id']}"), 200) == updated
    cleared = api.ok(api.post(f"/customers/{customer['id']}", {"email": None}), 200)
    assert (cleared["email"], cleared["name"], cleared["metadata"]) == (None, "Ada L.",
                                                                        {"a": "1", "c": "3"})
    events = outbox(container, customer["id"])
    assert [e["type"] for e in events] == ["customer.updated", "customer.updated"]
    assert events[-1]["data"]["object"] == cleared


def test_update_refuses_bad_input_and_writes_nothing(api: Api, container: Container) -> None:
    customer = api.customer(metadata={f"k{i}": "v" for i in range(50)})
    path = f"/customers/{customer['id']}"
    problem(api.post(path, {"email": "not-an-address"}), 422, "validation_failed")
    problem(api.post(path, {"nickname": "x"}), 422, "validation_failed")
    problem(api.post(path, {"metadata": {"k": 1}}), 422, "validation_failed")
    problem(api.post(path, {"metadata": {"x" * 41: "v"}}), 422, "validation_failed")
    problem(api.post(path, {"metadata": {"one-too-many": "v"}}), 422, "validation_failed")
    problem(api.post(path, []), 422, "validation_failed")
    problem(api.post(path, **NOT_JSON), 415)
    assert api.ok(api.post(path, {"metadata": {"k0": "", "new": "v"}}), 200)["metadata"][
        "new"] == "v"  # 50 keys after the merge is fine
    assert types(container, customer["id"]) == ["customer.updated"]


def test_customers_of_another_tenant_or_mode_are_404_for_every_new_endpoint(api: Api) -> None:
    customer = api.customer()
    method = api.payment_method(customer["id"])
    other = other_tenant(api)
    paths = [f"/customers/{customer['id']}", f"/customers/{customer['id']}/payment-methods",
             f"/customers/{customer['id']}/payment-methods/{method['id']}"]
    for key in (other.test_key, api.live_key):
        problem(api.post(paths[0], {"name": "x"}, key=key), 404, "resource_missing")
        problem(delete(api, paths[0], key=key), 404, "resource_missing")
        problem(api.get(paths[1], key=key), 404, "resource_missing")
        problem(delete(api, paths[2], key=key), 404, "resource_missing")
    assert api.ok(api.get(paths[0]), 200) == customer
    assert api.ok(api.get(paths[1]), 200)["data"] == [method]


# -- DELETE /customers/{id} -----------------------------------------------------------


def test_delete_is_refused_while_a_subscription_lives(api: Api, container: Container) -> None:
    sub = subscribe(api, plan(api)["id"])  # incomplete or active: alive either way
    problem(delete(api, f"/customers/{sub['customer_id']}"), 409, "customer_has_subscriptions")
    assert "customer.deleted" not in types(container, sub["customer_id"])
    api.ok(api.post(f"/subscriptions/{sub['id']}/cancel", {}), 200)
    gone = api.ok(delete(api, f"/customers/{sub['customer_id']}"), 200)
    assert gone == {"id": sub["customer_id"], "object": "customer", "deleted": True}


def test_delete_erases_email_and_name_and_keeps_payments(
    api: Api, container: Container, worker: object
) -> None:
    key = uuid.uuid4().hex
    customer = api.ok(api.post("/customers", {"email": "erase-me@example.com", "name": "Ada"},
                               headers={"Idempotency-Key": key}), 201)
    api.ok(api.post(f"/customers/{customer['id']}", {"name": "Ada Lovelace"}), 200)
    method = api.payment_method(customer["id"])
    body = {"amount": 500, "currency": "usd", "customer_id": customer["id"],
            "payment_method_id": method["id"]}
    paid = api.settled(api.ok(api.post("/pay", body, headers={"Idempotency-Key": key + "p"}),
                              202)["id"])
    assert paid["status"] == "succeeded"
    [updated] = outbox(container, customer["id"])
    endpoint_id, delivery_id = new_id("we"), new_id("whd")
    with container.uow() as uow:  # as the mail actor and the webhook dispatcher record them
        uow.session.add(SentMail(event_id="evt_x" + key[:8], kind="receipt",
                                 tenant_id=api.tenant_id, recipient="erase-me@example.com",
                                 subject="Receipt", message_id=f"<{key}@test>"))
        uow.session.add(WebhookEndpoint(id=endpoint_id, tenant_id=api.tenant_id, livemode=False,
                                        url="https://merchant.example/hook", event_types=["*"],
                                        secret_sealed=b"sealed"))
        uow.session.flush()
        uow.session.add(WebhookDelivery(id=delivery_id, tenant_id=api.tenant_id, livemode=False,
                                        endpoint_id=endpoint_id, event_id=updated["id"],
                                        event_type=updated["type"], payload=json.dumps(updated)))
        uow.commit()

    api.ok(delete(api, f"/customers/{customer['id']}"), 200)

    problem(api.get(f"/customers/{customer['id']}"), 404, "resource_missing")
    problem(delete(api, f"/customers/{customer['id']}"), 404, "resource_missing")
    assert customer["id"] not in {c["id"] for c in api.ok(api.get("/customers?limit=100"),
                                                          200)["data"]}
    assert api.ok(api.get(f"/payments/{paid['id']}"), 200)["status"] == "succeeded"
    problem(api.post("/pay", body, headers={"Idempotency-Key": key + "q"}), 404)
    replayed = api.post("/customers", {"email": "erase-me@example.com", "name": "Ada"},
                        headers={"Idempotency-Key": key})
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert (replayed.get_json()["email"], replayed.get_json()["name"]) == (None, None)
    events = outbox(container, customer["id"])
    assert [e["type"] for e in events] == ["customer.updated", "payment_method.detached",
                                           "customer.deleted"]
    for event in events:
        if event["data"]["object"]["object"] == "customer":
            assert (event["data"]["object"]["email"], event["data"]["object"]["name"]) == (
                None, None)
    with container.session_factory() as session:
        row = session.get_one(Customer, customer["id"])
        assert (row.email, row.name, row.deleted_at is not None) == (None, None, True)
        assert not session.scalars(select(SentMail).where(
            SentMail.recipient == "erase-me@example.com")).all()
        stored = session.get_one(IdempotencyKey, (api.tenant_id, False, key))
        assert "erase-me" not in str(stored.response_body)
        delivered = json.loads(session.get_one(WebhookDelivery, delivery_id).payload)
        assert delivered["data"]["object"]["name"] is None
        assert "erase-me" not in json.dumps(delivered)
        assert delivered["id"] == updated["id"]


def test_detaching_a_payment_method(api: Api, container: Container) -> None:
    customer = api.customer()
    first, second = api.payment_method(customer["id"]), api.payment_method(customer["id"])
    listed = api.ok(api.get(f"/customers/{customer['id']}/payment-methods?limit=1"), 200)
    assert (listed["data"], listed["has_more"]) == ([second], True)
    rest = api.ok(api.get(f"/customers/{customer['id']}/payment-methods"
                          f"?starting_after={second['id']}"), 200)
    assert (rest["data"], rest["has_more"]) == ([first], False)
    other = api.customer()
    problem(delete(api, f"/customers/{other['id']}/payment-methods/{first['id']}"), 404)
    problem(delete(api, f"/customers/{customer['id']}/payment-methods/pm_missing"), 404)

    gone = api.ok(delete(api, f"/customers/{customer['id']}/payment-methods/{first['id']}"),
                  200)
    assert gone == {"id": first["id"], "object": "payment_method", "deleted": True}
    assert api.ok(api.get(f"/customers/{customer['id']}/payment-methods"), 200)["data"] == [
        second]
    problem(delete(api, f"/customers/{customer['id']}/payment-methods/{first['id']}"), 404)
    body = {"amount": 500, "currency": "usd", "customer_id": customer["id"],
            "payment_method_id": first["id"]}
    problem(api.post("/pay", body, headers={"Idempotency-Key": uuid.uuid4().hex}), 404)
    [event] = outbox(container, customer["id"])
    assert (event["type"], event["data"]["object"]) == ("payment_method.detached", first)


def test_a_method_a_subscription_uses_cannot_be_detached(api: Api) -> None:
    sub = subscribe(api, plan(api)["id"])
    path = f"/customers/{sub['customer_id']}/payment-methods/{sub['payment_method_id']}"
    problem(delete(api, path), 409, "payment_method_in_use")
    api.ok(api.post(f"/subscriptions/{sub['id']}/cancel", {}), 200)
    api.ok(delete(api, path), 200)


def test_delete_detaches_at_stripe_and_paypal(merchant: Merchant, sims: Sims) -> None:
    api = merchant.api
    customer = api.customer()
    stripe_pm = sims.stripe.attached_payment_method(merchant.stripe_key, "cus_stripe1")
    merchant.method("stripe", stripe_pm, customer["id"])
    merchant.method("paypal", "vault_ok", customer["id"])
    merchant.method("stripe", "pm_card_visa", customer["id"])  # attached to no one at Stripe
    api.ok(delete(api, f"/customers/{customer['id']}"), 200)
    assert not sims.stripe.is_attached(stripe_pm)
    assert (merchant.paypal_client[0], "vault_ok") in sims.paypal.deleted_tokens
    assert sims.stripe.requests_to(f"/v1/payment_methods/{stripe_pm}/detach", "POST")


def test_provider_down_while_detaching_writes_nothing(merchant: Merchant, sims: Sims) -> None:
    api = merchant.api
    customer = api.customer()
    stripe_pm = sims.stripe.attached_payment_method(merchant.stripe_key, "cus_stripe2")
    method = merchant.method("stripe", stripe_pm, customer["id"])
    sims.stripe.inject("500", f"/v1/payment_methods/{stripe_pm}/detach")
    problem(delete(api, f"/customers/{customer['id']}"), 503)
    assert sims.stripe.is_attached(stripe_pm)
    assert api.ok(api.get(f"/customers/{customer['id']}/payment-methods"), 200)["data"] == [
        method]
    assert types(merchant.container, customer["id"]) == []
    path = f"/customers/{customer['id']}/payment-methods/{method['id']}"
    api.ok(delete(api, path), 200)
    assert not sims.stripe.is_attached(stripe_pm)


# -- POST /subscriptions/{id} ---------------------------------------------------------


def test_subscription_update_needs_the_customers_own_method(
    api: Api, container: Container
) -> None:
    sub = subscribe(api, plan(api)["id"], metadata={"a": "1"})
    path = f"/subscriptions/{sub['id']}"
    foreign = api.payment_method(api.customer()["id"])
    other = other_tenant(api)
    other_method = other.payment_method(other.customer()["id"])
    for method_id in (foreign["id"], other_method["id"], "pm_missing"):
        body = problem(api.post(path, {"payment_method_id": method_id}), 422)
        assert body["errors"] == [{"field": "payment_method_id", "message": body["detail"]}]
    problem(api.post(path, {"payment_method_id": 7}), 422, "validation_failed")
    problem(api.post(path, {"status": "active"}), 422, "validation_failed")
    problem(api.post(path, {"metadata": {"a": "x"}}, key=api.live_key), 404)
    problem(other.post(path, {"metadata": {"a": "x"}}), 404)
    assert "subscription.updated" not in types(container, sub["id"])

    mine = api.payment_method(sub["customer_id"], "tok_insufficient_funds")
    updated = api.ok(api.post(path, {"payment_method_id": mine["id"],
                                     "metadata": {"a": "", "b": "2"}}), 200)
    assert (updated["payment_method_id"], updated["metadata"]) == (mine["id"], {"b": "2"})
    assert types(container, sub["id"]).count("subscription.updated") == 1
    [event] = [e for e in outbox(container, sub["id"]) if e["type"] == "subscription.updated"]
    assert event["data"]["object"] == updated
    api.ok(api.post(f"/subscriptions/{sub['id']}/cancel", {}), 200)
    problem(api.post(path, {"metadata": {"c": "3"}}), 409, "subscription_ended")


# -- POST /payments/{id}/retry --------------------------------------------------------


def test_only_a_payment_in_dunning_can_be_retried(api: Api, worker: object) -> None:
    one_time = api.settled(api.pay("tok_insufficient_funds")["id"])
    assert one_time["status"] == "failed"
    problem(api.post(f"/payments/{one_time['id']}/retry"), 409, "payment_not_retryable")
    _, sub = active_on_clock(api, "2025-01-15T00:00:00Z")
    [first] = payments_of(api, sub["id"])
    problem(api.post(f"/payments/{first['id']}/retry"), 409, "payment_not_retryable")
    problem(api.post(f"/payments/{first['id']}/retry", key=api.live_key), 404)
    problem(other_tenant(api).post(f"/payments/{first['id']}/retry"), 404)
    problem(api.post("/payments/pay_missing/retry"), 404)
    problem(api.post(f"/payments/{first['id']}/retry", {"now": True}), 422)


def test_a_failed_retry_counts_as_a_dunning_attempt(api: Api, worker: object) -> None:
    """Retries 1, 3 and 5 days after the first failure; two asked early stand in for the
    first two, the scheduled third is the last, and its failure cancels."""
    clock_, sub = active_on_clock(api, "2025-01-15T00:00:00Z")
    poor = api.payment_method(sub["customer_id"], "tok_insufficient_funds")
    api.ok(api.post(f"/subscriptions/{sub['id']}", {"payment_method_id": poor["id"]}), 200)
    advance(api, clock_["id"], "2025-02-15T01:00:00Z")
    past_due = wait_status(api, sub["id"], "past_due")
    renewal = api.ok(api.get(f"/payments/{past_due['latest_payment_id']}"), 200)
    assert (renewal["status"], len(renewal["attempts"])) == ("failed", 1)
    for attempts in (2, 3):
        retried = api.ok(api.post(f"/payments/{renewal['id']}/retry"), 202)
        assert retried["status"] == "pending"
        settled = api.settled(renewal["id"])
        assert (settled["status"], len(settled["attempts"])) == ("failed", attempts)
    assert wait_status(api, sub["id"], "past_due")
    advance(api, clock_["id"], "2025-02-20T00:00:00Z")  # the third (last) retry, on day 5
    canceled = wait_status(api, sub["id"], "canceled")
    assert (canceled["cancellation_reason"], canceled["canceled_at"]) == (
        "payment_failed", "2025-02-20T00:00:00Z")
    assert len(api.ok(api.get(f"/payments/{renewal['id']}"), 200)["attempts"]) == 4


# -- GET /refunds/{id}, GET /payments/{id}/refunds ------------------------------------


def test_refunds_are_read_one_by_one_and_per_payment(api: Api, worker: object) -> None:
    paid = api.settled(api.pay(amount=1000)["id"])
    first = api.ok(api.post(f"/payments/{paid['id']}/refunds", {"amount": 300}), 201)
    second = api.ok(api.post(f"/payments/{paid['id']}/refunds", {"amount": 200}), 201)
    got = api.ok(api.get(f"/refunds/{first['id']}"), 200)
    assert {k: v for k, v in got.items() if k != "status"} == {
        k: v for k, v in first.items() if k != "status"}
    assert got["created_at"].endswith("Z")
    listed = api.ok(api.get(f"/payments/{paid['id']}/refunds?limit=1"), 200)
    assert ([r["id"] for r in listed["data"]], listed["has_more"]) == ([second["id"]], True)
    rest = api.ok(api.get(f"/payments/{paid['id']}/refunds?starting_after={second['id']}"), 200)
    assert ([r["id"] for r in rest["data"]], rest["has_more"]) == ([first["id"]], False)
    other = other_tenant(api)
    for key in (other.test_key, api.live_key):
        problem(api.get(f"/refunds/{first['id']}", key=key), 404, "resource_missing")
        problem(api.get(f"/payments/{paid['id']}/refunds", key=key), 404, "resource_missing")
    problem(api.get("/refunds/re_missing"), 404)
    problem(api.get(f"/payments/{paid['id']}/refunds?limit=0"), 422)
    assert api.ok(api.get(f"/payments/{api.pay()['id']}/refunds"), 200)["data"] == []
