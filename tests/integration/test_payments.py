"""Payments through the real worker: every sandbox token, lists, refunds and outbox events."""

from __future__ import annotations

import re
import threading
import uuid
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from app.api import schemas
from app.bootstrap import Container
from app.models import Refund, RefundStatus
from app.models.sandbox import SandboxRefund
from app.services.reconcile import claim_stale_work
from tests.integration.checks import assert_problem, assert_shape, outbox_events, rows
from tests.support import Api, eventually

pytestmark = pytest.mark.usefixtures("worker")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def charges(api: Api, payment_id: str) -> list[dict[str, Any]]:
    """The sandbox ledger's charges of one payment."""
    found: list[dict[str, Any]] = api.ok(
        api.get(f"/sandbox/charges?payment_id={payment_id}"), 200
    )["data"]
    return found


def settled(api: Api, payment_id: str) -> dict[str, Any]:
    payment = api.settled(payment_id)
    assert_shape(payment, schemas.Payment)
    return payment


def test_tok_ok_succeeds_with_one_charge(api: Api) -> None:
    created = api.pay("tok_ok", amount=1234)
    assert_shape(created, schemas.Payment)
    assert (created["status"], created["attempts"], created["subscription_id"]) == (
        "pending", [], None)
    payment = settled(api, created["id"])
    assert payment["status"] == "succeeded"
    assert (payment["failure_code"], payment["failure_message"], payment["next_action"]) == (
        None, None, None)
    [attempt] = payment["attempts"]
    assert (attempt["number"], attempt["status"]) == (1, "succeeded")
    assert attempt["provider"] == "sandbox"
    assert RFC3339.fullmatch(attempt["created_at"])
    [charge] = charges(api, payment["id"])
    assert_shape(charge, schemas.SandboxCharge)
    assert (charge["amount"], charge["currency"], charge["idempotency_key"]) == (
        1234, "usd", f"{payment['id']}:1")


def test_creations_answer_with_the_object_as_get_shows_it(api: Api) -> None:
    customer = api.customer(metadata={"k": "v"})
    assert_shape(customer, schemas.Customer)
    assert customer["id"].startswith("cus_") and RFC3339.fullmatch(customer["created_at"])
    assert api.ok(api.get(f"/customers/{customer['id']}"), 200) == customer
    method = api.payment_method(customer["id"], "tok_ok")
    assert_shape(method, schemas.PaymentMethod)
    assert method["id"].startswith("pm_")
    assert (method["customer_id"], method["provider"]) == (customer["id"], "sandbox")
    body = {"amount": 700, "currency": "eur", "customer_id": customer["id"],
            "payment_method_id": method["id"], "description": "Order 7"}
    response = api.post("/pay", body, headers={"Idempotency-Key": uuid.uuid4().hex})
    created = api.ok(response, 202)
    assert created["id"].startswith("pay_")
    assert response.headers["Location"] == f"/payments/{created['id']}"
    shown = api.ok(api.get(response.headers["Location"]), 200)
    assert {k: shown[k] for k in body} == body
    assert shown["created_at"] == created["created_at"]


def test_customers_are_listed_newest_first_in_pages(api: Api) -> None:
    made = [api.customer(name=f"c{i}")["id"] for i in range(3)]
    first = api.ok(api.get("/customers?limit=2"), 200)
    assert (first["object"], [c["id"] for c in first["data"]], first["has_more"]) == (
        "list", made[:0:-1], True)
    rest = api.ok(api.get(f"/customers?limit=2&starting_after={made[1]}"), 200)
    assert ([c["id"] for c in rest["data"]], rest["has_more"]) == ([made[0]], False)


DECLINES = {
    "tok_decline": "card_declined",
    "tok_insufficient_funds": "insufficient_funds",
    "tok_fail_1": "try_again_later",
}


def test_declines_fail_after_one_attempt_and_are_not_retried(api: Api) -> None:
    created = {token: api.pay(token)["id"] for token in DECLINES}
    for token, code in DECLINES.items():
        payment = settled(api, created[token])
        assert (payment["status"], payment["failure_code"]) == ("failed", code), payment
        assert payment["failure_message"]
        assert [(a["number"], a["status"], a["failure_code"]) for a in payment["attempts"]] == [
            (1, "failed", code)]
    # A payment made after them has gone through the worker: still no second attempt.
    assert settled(api, api.pay("tok_ok")["id"])["status"] == "succeeded"
    for token in DECLINES:
        payment = api.ok(api.get(f"/payments/{created[token]}"), 200)
        assert len(payment["attempts"]) == 1
        assert charges(api, payment["id"]) == []


def test_tok_error_is_retried_then_fails_as_provider_unavailable(api: Api) -> None:
    """Config: 3 retries, 20-200 ms backoff; the provider never charged anything."""
    created = api.pay("tok_error")

    def given_up() -> dict[str, Any] | None:
        payment = api.ok(api.get(f"/payments/{created['id']}"), 200)
        return payment if payment["status"] == "failed" else None

    payment = eventually(given_up, what="tok_error to be given up")
    assert payment["failure_code"] == "provider_unavailable"
    assert [(a["number"], a["status"], a["failure_code"]) for a in payment["attempts"]] == [
        (n, "failed", "provider_unavailable") for n in (1, 2, 3, 4)]
    assert charges(api, payment["id"]) == []


def test_tok_action_requires_action_with_a_redirect(api: Api) -> None:
    payment = settled(api, api.pay("tok_action")["id"])
    assert payment["status"] == "requires_action"
    url = payment["next_action"]["redirect_url"]
    assert url.startswith("https://") and payment["id"] in url
    assert [a["status"] for a in payment["attempts"]] == ["requires_action"]
    assert charges(api, payment["id"]) == []


def test_tok_timeout_is_unknown_until_reconciliation_finds_the_charge(
    api: Api, container: Container
) -> None:
    payment = settled(api, api.pay("tok_timeout")["id"])
    assert payment["status"] == "unknown"
    assert len(charges(api, payment["id"])) == 1  # the provider did charge; the answer was lost

    def reconciled() -> dict[str, Any] | None:
        with container.uow() as uow:
            claim_stale_work(uow, stale_seconds=1, batch=1000)
            uow.commit()
        now = api.ok(api.get(f"/payments/{payment['id']}"), 200)
        return now if now["status"] == "succeeded" else None

    done = eventually(reconciled, what="reconciliation")
    assert [(a["number"], a["status"]) for a in done["attempts"]] == [(1, "succeeded")]
    assert len(charges(api, payment["id"])) == 1


def _pay(api: Api, customer_id: str, method_id: str) -> str:
    body = {"amount": 500, "currency": "usd", "customer_id": customer_id,
            "payment_method_id": method_id}
    response = api.post("/pay", body, headers={"Idempotency-Key": uuid.uuid4().hex})
    return str(api.ok(response, 202)["id"])


def _ids(api: Api, query: str) -> tuple[list[str], bool]:
    page = api.ok(api.get(f"/payments?{query}"), 200)
    assert page["object"] == "list"
    for item in page["data"]:
        assert_shape(item, schemas.Payment)
    return [p["id"] for p in page["data"]], page["has_more"]


def test_listing_pages_newest_first_and_filters(api: Api) -> None:
    a, b = api.customer(), api.customer()
    a_ok, a_decline = (api.payment_method(a["id"], t)["id"] for t in ("tok_ok", "tok_decline"))
    b_ok = api.payment_method(b["id"])["id"]
    made = [_pay(api, a["id"], a_ok), _pay(api, b["id"], b_ok), _pay(api, a["id"], a_decline),
            _pay(api, b["id"], b_ok), _pay(api, a["id"], a_ok)]
    for payment_id in made:
        api.settled(payment_id)
    p1, p2, p3, p4, p5 = made

    assert _ids(api, "") == ([p5, p4, p3, p2, p1], False)
    assert _ids(api, "limit=2") == ([p5, p4], True)
    assert _ids(api, f"limit=2&starting_after={p4}") == ([p3, p2], True)
    assert _ids(api, f"limit=2&starting_after={p2}") == ([p1], False)
    assert _ids(api, f"starting_after={p1}") == ([], False)
    assert _ids(api, "limit=5") == ([p5, p4, p3, p2, p1], False)
    assert _ids(api, f"customer_id={a['id']}") == ([p5, p3, p1], False)
    assert _ids(api, f"customer_id={a['id']}&limit=2") == ([p5, p3], True)
    assert _ids(api, f"customer_id={a['id']}&limit=2&starting_after={p3}") == ([p1], False)
    assert _ids(api, "status=failed") == ([p3], False)
    assert _ids(api, "status=succeeded") == ([p5, p4, p2, p1], False)
    assert _ids(api, f"status=succeeded&customer_id={b['id']}") == ([p4, p2], False)
    assert _ids(api, "status=pending") == ([], False)
    assert _ids(api, "subscription_id=sub_none") == ([], False)
    assert _ids(api, "customer_id=cus_missing") == ([], False)
    listed = api.ok(api.get("/payments"), 200)["data"]
    assert listed == [api.ok(api.get(f"/payments/{p}"), 200) for p in made[::-1]]


def refund(api: Api, payment_id: str, body: Any = None, **kwargs: Any) -> Any:
    return api.post(f"/payments/{payment_id}/refunds", body, **kwargs)


def test_partial_then_the_rest_then_nothing_more(api: Api, container: Container) -> None:
    payment = settled(api, api.pay("tok_ok", amount=1999)["id"])
    over = assert_problem(refund(api, payment["id"], {"amount": 2000}), 422, "amount_too_large")
    assert [e["field"] for e in over["errors"]] == ["amount"]

    first = api.ok(refund(api, payment["id"], {"amount": 500}), 201)
    assert_shape(first, schemas.Refund)
    assert first["id"].startswith("re_")
    assert (first["object"], first["payment_id"], first["amount"]) == (
        "refund", payment["id"], 500)
    assert first["status"] in ("pending", "succeeded")
    assert_problem(refund(api, payment["id"], {"amount": 1500}), 422, "amount_too_large")
    rest = api.ok(refund(api, payment["id"]), 201)
    assert rest["amount"] == 1499
    assert_problem(refund(api, payment["id"], {"amount": 1}), 422, "already_refunded")
    assert_problem(refund(api, payment["id"], {}), 422, "already_refunded")

    def refunded() -> dict[str, Any] | None:
        now = api.ok(api.get(f"/payments/{payment['id']}"), 200)
        return now if now["amount_refunded"] == 1999 else None

    final = eventually(refunded, what="both refunds to be made")
    assert final["status"] == "succeeded"
    with container.session_factory() as session:
        statuses = session.scalars(select(Refund.status).where(Refund.payment_id == payment["id"]))
        assert sorted(statuses) == [RefundStatus.SUCCEEDED] * 2
        ledger = session.scalar(select(func.sum(SandboxRefund.amount)).where(
            SandboxRefund.charge_id == charges(api, payment["id"])[0]["id"]))
        assert ledger == 1999
    events = [e for e in outbox_events(container, payment["id"]) if e.type == "payment.refunded"]
    assert len(events) == 2
    refunded_so_far = [e.payload["data"]["object"]["amount_refunded"] for e in events]
    assert refunded_so_far in ([500, 1999], [1499, 1999])  # the worker may make either first
    assert events[-1].payload["data"]["object"] == final


def test_concurrent_refunds_never_exceed_the_amount(
    app: Flask, api: Api, container: Container
) -> None:
    payment = settled(api, api.pay("tok_ok", amount=1999)["id"])
    start = threading.Barrier(6)
    statuses: list[int] = []

    def send() -> None:
        client = app.test_client()
        start.wait()
        response = client.post(f"/payments/{payment['id']}/refunds", json={"amount": 1000},
                               headers={"Authorization": f"Bearer {api.test_key}"})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [201] + [422] * 5
    assert rows(container, api.tenant_id).refunds == 1


@pytest.mark.parametrize("token", ["tok_decline", "tok_action"])
def test_only_succeeded_payments_can_be_refunded(
    api: Api, container: Container, token: str
) -> None:
    payment = settled(api, api.pay(token)["id"])
    before = rows(container, api.tenant_id)
    assert_problem(refund(api, payment["id"], {"amount": 1}), 409, "payment_not_refundable")
    assert_problem(refund(api, payment["id"]), 409, "payment_not_refundable")
    assert rows(container, api.tenant_id) == before


def test_a_refund_replayed_by_key_is_made_once(api: Api, container: Container) -> None:
    payment = settled(api, api.pay("tok_ok", amount=1000)["id"])
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = api.ok(refund(api, payment["id"], {"amount": 300}, headers=key), 201)
    again = refund(api, payment["id"], {"amount": 300}, headers=key)
    assert (again.status_code, again.get_json()) == (201, first)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert rows(container, api.tenant_id).refunds == 1


def _check_envelope(event: Any, api: Api, payment_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = event.payload
    assert set(payload) == {"id", "type", "schema_version", "occurred_at", "tenant_id",
                            "livemode", "data"}
    assert payload["id"] == event.event_id and payload["id"].startswith("evt_")
    assert payload["type"] == event.type
    assert payload["schema_version"] == 1
    assert RFC3339.fullmatch(payload["occurred_at"])
    assert (payload["tenant_id"], payload["livemode"]) == (api.tenant_id, False)
    assert (event.topic, event.key) == ("billing.payments", payment_id)
    assert set(payload["data"]) == {"object"}
    return payload


@pytest.mark.parametrize(("token", "final"), [
    ("tok_ok", "payment.succeeded"),
    ("tok_decline", "payment.failed"),
    ("tok_action", "payment.requires_action"),
    ("tok_error", "payment.failed"),
])
def test_events_carry_the_payment_as_the_api_showed_it(
    api: Api, container: Container, token: str, final: str
) -> None:
    created = api.pay(token)
    payment = eventually(
        lambda: (p := api.ok(api.get(f"/payments/{created['id']}"), 200))["status"]
        not in ("pending", "processing") and p,
        what="the payment to settle",
    )
    events = outbox_events(container, created["id"])
    assert [e.type for e in events] == ["payment.created", final]
    first, last = (_check_envelope(e, api, created["id"]) for e in events)
    assert first["data"]["object"] == created
    assert last["data"]["object"] == payment
    assert first["id"] != last["id"]
