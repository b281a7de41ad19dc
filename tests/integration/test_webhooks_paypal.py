"""POST /webhooks/paypal: verified through PayPal's verify-webhook-signature call.

A buyer's approval sends the payment back to the worker, whose next attempt captures the
approved order; a completed capture settles a payment whose answer was lost. Bad, missing
or foreign signatures change nothing; when PayPal cannot be asked, the answer is 503 so
PayPal delivers again.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.integration.checks import assert_problem
from tests.sim.fixtures import TOKENS, Merchant, Sims, new_merchant
from tests.sim.paypal_sim import PayPalSim


def deliver(merchant: Merchant, event_type: str, resource: dict[str, Any],
            webhook_id: str | None = None, **changes: str) -> Any:
    sim = merchant.sims.paypal
    headers, body = sim.deliver(webhook_id or merchant.paypal_webhook_id, event_type, resource)
    headers.update(changes)
    return merchant.api.client.post("/webhooks/paypal", data=body, headers=headers,
                                    content_type="application/json")


def public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def waiting_for_approval(merchant: Merchant) -> tuple[dict[str, Any], str]:
    payment = merchant.charge(merchant.pay("paypal", TOKENS["paypal"]["action"])["id"])
    assert payment["status"] == "requires_action"
    order_id = merchant.sims.paypal.order_for(payment["id"])["id"]
    assert payment["next_action"]["redirect_url"].endswith(f"token={order_id}")
    return payment, order_id


def test_approval_resumes_the_payment_and_its_capture_settles_it_once(
    merchant: Merchant, sims: Sims
) -> None:
    payment, order_id = waiting_for_approval(merchant)
    approved = sims.paypal.approve(order_id)
    response = deliver(merchant, "CHECKOUT.ORDER.APPROVED", approved)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["result"] == "resumed"
    assert merchant.payment(payment["id"])["status"] == "processing"
    again = deliver(merchant, "CHECKOUT.ORDER.APPROVED", approved)  # a duplicate
    assert again.get_json()["result"].startswith("ignored")

    settled = merchant.charge(payment["id"])  # the worker's next attempt captures
    assert settled["status"] == "succeeded"
    assert [a["status"] for a in settled["attempts"]] == ["requires_action", "succeeded"]
    capture = public(sims.paypal.capture_of(payment["id"]))
    late = deliver(merchant, "PAYMENT.CAPTURE.COMPLETED", capture)
    assert late.get_json()["result"].startswith("ignored")
    assert sims.ledger("paypal", payment["id"]) == 1


def test_a_capture_completed_settles_a_payment_whose_answer_was_lost(
    merchant: Merchant, sims: Sims
) -> None:
    payment = merchant.pay("paypal", TOKENS["paypal"]["ok"])
    sims.paypal.inject("lost", "/v2/checkout/orders/*/capture")
    assert merchant.charge(payment["id"])["status"] == "unknown"
    capture = public(sims.paypal.capture_of(payment["id"]))
    response = deliver(merchant, "PAYMENT.CAPTURE.COMPLETED", capture)
    assert response.get_json()["result"] == "settled"
    settled = merchant.payment(payment["id"])
    assert settled["status"] == "succeeded"
    assert deliver(merchant, "PAYMENT.CAPTURE.COMPLETED", capture).get_json()[
        "result"].startswith("ignored")
    assert sims.ledger("paypal", payment["id"]) == 1


@pytest.mark.parametrize("lie", [{"amount": {"currency_code": "USD", "value": "0.01"}},
                                 {"supplementary_data": {"related_ids": {"order_id": "5O1"}}}])
def test_a_capture_that_does_not_match_the_payment_changes_nothing(
    merchant: Merchant, sims: Sims, lie: dict[str, Any]
) -> None:
    payment = merchant.pay("paypal", TOKENS["paypal"]["ok"])
    sims.paypal.inject("lost", "/v2/checkout/orders/*/capture")
    assert merchant.charge(payment["id"])["status"] == "unknown"
    capture = public(sims.paypal.capture_of(payment["id"]))
    before = merchant.payment(payment["id"])
    response = deliver(merchant, "PAYMENT.CAPTURE.COMPLETED", {**capture, **lie})
    assert response.get_json()["result"].startswith("ignored: the")
    assert merchant.payment(payment["id"]) == before
    assert deliver(merchant, "PAYMENT.CAPTURE.COMPLETED", capture).get_json()[
        "result"] == "settled"


def test_bad_missing_or_foreign_signatures_are_400_and_change_nothing(
    merchant: Merchant, sims: Sims, sim_app: Flask
) -> None:
    payment, order_id = waiting_for_approval(merchant)
    approved = sims.paypal.approve(order_id)
    before = merchant.updated_at(payment["id"])
    other = new_merchant(sim_app, sims)
    headers, body = sims.paypal.deliver(merchant.paypal_webhook_id, "CHECKOUT.ORDER.APPROVED",
                                        approved)
    post = merchant.api.client.post
    unsigned = {k: v for k, v in headers.items() if k != "PAYPAL-TRANSMISSION-SIG"}
    tampered = body.replace(b"CHECKOUT.ORDER.APPROVED", b"PAYMENT.CAPTURE.COMPLETED")
    attempts = [
        post("/webhooks/paypal", data=body, headers=unsigned, content_type="application/json"),
        post("/webhooks/paypal", data=tampered, headers=headers,
             content_type="application/json"),
        deliver(merchant, "CHECKOUT.ORDER.APPROVED", approved,
                **{"PAYPAL-TRANSMISSION-SIG": "AAAA" + headers["PAYPAL-TRANSMISSION-SIG"]}),
        # Signed for another merchant's webhook: not this tenant's.
        deliver(merchant, "CHECKOUT.ORDER.APPROVED", approved, other.paypal_webhook_id),
    ]
    for response in attempts:
        assert_problem(response, 400, "invalid_signature")
    assert merchant.updated_at(payment["id"]) == before
    assert merchant.payment(payment["id"])["status"] == "requires_action"


def test_when_paypal_cannot_verify_the_answer_is_503_and_nothing_changes(
    merchant: Merchant, sims: Sims
) -> None:
    payment, order_id = waiting_for_approval(merchant)
    approved = sims.paypal.approve(order_id)
    sim: PayPalSim = sims.paypal
    sim.inject("500", "/v1/notifications/verify-webhook-signature")
    problem = assert_problem(deliver(merchant, "CHECKOUT.ORDER.APPROVED", approved), 503,
                             "dependency_unavailable")
    assert "again" in problem["detail"]
    assert merchant.payment(payment["id"])["status"] == "requires_action"
    retried = deliver(merchant, "CHECKOUT.ORDER.APPROVED", approved)  # PayPal's redelivery
    assert retried.get_json()["result"] == "resumed"
