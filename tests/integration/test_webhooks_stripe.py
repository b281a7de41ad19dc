"""POST /webhooks/stripe: signed events settle waiting payments once; anything unsigned,
badly signed, stale or about someone else changes nothing."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from app.clock import utcnow
from app.ids import new_id
from app.models import OutboxEvent, Subscription
from app.services import renewals
from app.services.billing_cycle import INCOMPLETE_EXPIRY
from tests.integration.checks import assert_problem
from tests.sim.fixtures import TOKENS, Merchant, Sims, new_merchant
from tests.sim.stripe_sim import sign


def deliver(merchant: Merchant, event: dict[str, Any], *, secret: str | None = None,
            timestamp: int | None = None, body: bytes | None = None) -> Any:
    payload = body if body is not None else json.dumps(event).encode()
    signature = sign(payload, secret or merchant.stripe_webhook_secret, timestamp)
    return merchant.api.client.post("/webhooks/stripe", data=payload,
                                    headers={"Stripe-Signature": signature},
                                    content_type="application/json")


def events_of(merchant: Merchant, payment_id: str) -> list[str]:
    with merchant.container.session_factory() as session:
        return list(session.scalars(
            select(OutboxEvent.type)
            .where(OutboxEvent.payload["data"]["object"]["id"].astext == payment_id)
            .order_by(OutboxEvent.id)
        ))


def waiting_for_3ds(merchant: Merchant) -> tuple[dict[str, Any], str]:
    payment = merchant.charge(merchant.pay("stripe", TOKENS["stripe"]["action"])["id"])
    assert payment["status"] == "requires_action"
    assert payment["next_action"]["redirect_url"].startswith(merchant.sims.stripe.url)
    return payment, merchant.sims.stripe.intent_for(payment["id"])["id"]


def test_3ds_done_settles_the_payment_once(merchant: Merchant, sims: Sims) -> None:
    payment, intent = waiting_for_3ds(merchant)
    event = sims.stripe.authenticate(intent)
    response = deliver(merchant, event)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["result"] == "settled"
    settled = merchant.payment(payment["id"])
    assert (settled["status"], settled["next_action"]) == ("succeeded", None)
    assert [a["status"] for a in settled["attempts"]] == ["succeeded"]
    before = (merchant.updated_at(payment["id"]), events_of(merchant, payment["id"]))

    again = deliver(merchant, event)  # a duplicate delivery
    assert again.status_code == 200 and again.get_json()["result"].startswith("ignored")
    assert (merchant.updated_at(payment["id"]), events_of(merchant, payment["id"])) == before
    assert events_of(merchant, payment["id"]).count("payment.succeeded") == 1
    assert sims.ledger("stripe", payment["id"]) == 1


def test_3ds_failed_fails_the_payment(merchant: Merchant, sims: Sims) -> None:
    payment, intent = waiting_for_3ds(merchant)
    response = deliver(merchant, sims.stripe.authenticate(intent, succeed=False))
    assert response.status_code == 200, response.get_data(as_text=True)
    failed = merchant.payment(payment["id"])
    assert failed["status"] == "failed"
    assert failed["failure_code"] == "payment_intent_authentication_failure"
    assert sims.ledger("stripe", payment["id"]) == 0


def test_out_of_order_a_late_failure_changes_nothing(
    merchant: Merchant, sims: Sims
) -> None:
    payment, intent_id = waiting_for_3ds(merchant)
    intent = sims.stripe.intents[intent_id]
    stale = sims.stripe.event("payment_intent.payment_failed", {
        **intent, "status": "requires_payment_method",
        "last_payment_error": {"code": "card_declined", "decline_code": "generic_decline",
                               "message": "declined"},
    })
    # Stripe still waits for the customer: the failure is stale and is ignored.
    assert deliver(merchant, stale).get_json()["result"].startswith("ignored")
    assert merchant.payment(payment["id"])["status"] == "requires_action"

    success = sims.stripe.authenticate(intent_id)
    assert deliver(merchant, success).get_json()["result"] == "settled"
    assert deliver(merchant, stale).get_json()["result"].startswith("ignored")
    assert merchant.payment(payment["id"])["status"] == "succeeded"


def test_success_settles_a_payment_whose_answer_was_lost(
    merchant: Merchant, sims: Sims
) -> None:
    payment = merchant.pay("stripe", TOKENS["stripe"]["ok"])
    sims.stripe.inject("lost", "/v1/payment_intents/*/confirm")
    assert merchant.charge(payment["id"])["status"] == "unknown"
    intent = sims.stripe.intent_for(payment["id"])
    response = deliver(merchant, sims.stripe.event("payment_intent.succeeded", intent))
    assert response.get_json()["result"] == "settled"
    assert merchant.payment(payment["id"])["status"] == "succeeded"
    # The reconciler comes later and finds nothing left to do.
    assert merchant.reconcile(payment["id"])["status"] == "succeeded"
    assert sims.ledger("stripe", payment["id"]) == 1


def bad_deliveries(merchant: Merchant, event: dict[str, Any]) -> list[tuple[str, Any]]:
    payload = json.dumps(event).encode()
    client = merchant.api.client
    post = client.post
    good = sign(payload, merchant.stripe_webhook_secret)
    tampered = json.dumps({**event, "type": "payment_intent.succeeded", "x": 1}).encode()
    return [
        ("no signature", post("/webhooks/stripe", data=payload, content_type="application/json")),
        ("another secret", deliver(merchant, event, secret="whsec_someone_else")),
        ("too old", deliver(merchant, event, timestamp=int(time.time()) - 301)),
        ("garbage header", post("/webhooks/stripe", data=payload,
                                headers={"Stripe-Signature": "t=1,v1=00"})),
        ("body changed", post("/webhooks/stripe", data=tampered,
                              headers={"Stripe-Signature": good})),
        ("not json", post("/webhooks/stripe", data=b"\xff\x00",
                          headers={"Stripe-Signature": good})),
    ]


def test_bad_or_missing_signatures_are_400_and_change_nothing(
    merchant: Merchant, sims: Sims
) -> None:
    payment, intent = waiting_for_3ds(merchant)
    event = sims.stripe.authenticate(intent)
    before = merchant.updated_at(payment["id"])
    for what, response in bad_deliveries(merchant, event):
        problem = assert_problem(response, 400)
        assert problem["code"] == "invalid_signature", what
    assert merchant.updated_at(payment["id"]) == before
    assert merchant.payment(payment["id"])["status"] == "requires_action"
    assert deliver(merchant, event).get_json()["result"] == "settled"  # the real one works


def test_another_tenants_secret_cannot_settle_my_payment(
    merchant: Merchant, sims: Sims, sim_app: Any
) -> None:
    payment, intent = waiting_for_3ds(merchant)
    intruder = new_merchant(sim_app, sims)
    response = deliver(intruder, sims.stripe.authenticate(intent))
    assert_problem(response, 400, "invalid_signature")
    assert merchant.payment(payment["id"])["status"] == "requires_action"


@pytest.mark.parametrize("body", [
    b"{}", b"[]", b"null", b'{"data": {"object": {}}}',
    b'{"type": "customer.created", "data": {"object": {"metadata": {}}}}',
    json.dumps({"data": {"object": {"metadata": {"payment_id": new_id("pay")}}}}).encode(),
])
def test_events_about_no_payment_of_ours_are_acknowledged_and_ignored(
    merchant: Merchant, body: bytes
) -> None:
    """Stripe disables an endpoint that keeps failing; an event not ours changes nothing."""
    response = deliver(merchant, {}, body=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["result"].startswith("ignored")


@pytest.mark.parametrize("payment_id", [
    "pay_\x00", "\x00", "pay_" + "x" * 300, "pay_01kb/../../x", 12, ["pay_x"], "cus_123",
])
def test_an_invalid_payment_id_is_400_never_500(merchant: Merchant, payment_id: Any) -> None:
    body = json.dumps({"id": "evt_1", "type": "payment_intent.succeeded",
                       "data": {"object": {"metadata": {"payment_id": payment_id}}}}).encode()
    assert_problem(deliver(merchant, {}, body=body), 400, "invalid_payment_id")


@pytest.mark.parametrize("lie", [{"amount_received": 1}, {"currency": "eur"}])
def test_a_succeeded_event_that_does_not_match_the_payment_changes_nothing(
    merchant: Merchant, sims: Sims, lie: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    payment, intent = waiting_for_3ds(merchant)
    event = sims.stripe.authenticate(intent)
    forged = {**event, "data": {"object": {**event["data"]["object"], **lie}}}
    before = (merchant.payment(payment["id"]), events_of(merchant, payment["id"]))
    with caplog.at_level("WARNING", logger="app.services.webhooks"):
        response = deliver(merchant, forged)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["result"].startswith("ignored")
    assert (merchant.payment(payment["id"]), events_of(merchant, payment["id"])) == before
    assert any("does not match" in record.getMessage() for record in caplog.records)
    assert deliver(merchant, event).get_json()["result"] == "settled"  # the true one does


def test_an_event_from_the_other_mode_is_refused(merchant: Merchant, sims: Sims) -> None:
    payment, intent = waiting_for_3ds(merchant)
    event = {**sims.stripe.authenticate(intent), "livemode": True}
    assert_problem(deliver(merchant, event), 400, "invalid_signature")
    assert merchant.payment(payment["id"])["status"] == "requires_action"


def incomplete_waiting_for_3ds(merchant: Merchant) -> tuple[dict[str, Any], str]:
    """A subscription whose first payment waits for 3-D Secure, 23 hours after it began."""
    api = merchant.api
    plan = api.ok(api.post("/plans", {"code": f"p-{uuid.uuid4().hex[:10]}", "name": "Pro",
                                      "amount": 3000, "currency": "usd",
                                      "interval": "month"}), 201)
    method = merchant.method("stripe", TOKENS["stripe"]["action"])
    sub = api.ok(api.post("/subscriptions", {"customer_id": method["customer_id"],
                                             "plan_id": plan["id"],
                                             "payment_method_id": method["id"]}), 201)
    payment = merchant.charge(sub["latest_payment_id"])
    assert payment["status"] == "requires_action"
    began = utcnow() - INCOMPLETE_EXPIRY - timedelta(minutes=1)
    with merchant.container.session_factory() as session:
        session.execute(update(Subscription).where(Subscription.id == sub["id"])
                        .values(created_at=began, next_event_at=began + INCOMPLETE_EXPIRY))
        session.commit()
    return sub, merchant.sims.stripe.intent_for(payment["id"])["id"]


def run_due(merchant: Merchant, sub_id: str) -> dict[str, Any]:
    """The worker's renewal message for one subscription, in this process."""
    c = merchant.container
    renewals.run_due(c.uow, c.providers, [sub_id], utcnow(),
                     lease_seconds=c.config.payment_lease_seconds)
    return merchant.api.ok(merchant.api.get(f"/subscriptions/{sub_id}"), 200)


def test_an_expired_subscriptions_3ds_payment_is_canceled_at_stripe(
    merchant: Merchant, sims: Sims
) -> None:
    sub, intent = incomplete_waiting_for_3ds(merchant)
    expired = run_due(merchant, sub["id"])
    assert (expired["status"], expired["cancellation_reason"]) == (
        "incomplete_expired", "payment_failed")
    payment = merchant.payment(sub["latest_payment_id"])
    assert (payment["status"], payment["failure_code"]) == ("failed", "payment_expired")
    assert sims.stripe.intent_for(payment["id"])["status"] == "canceled"  # 3DS can't finish
    assert sims.ledger("stripe", payment["id"]) == 0
    assert events_of(merchant, payment["id"]).count("payment.failed") == 1
    assert run_due(merchant, sub["id"]) == expired  # nothing more to do
    assert intent == sims.stripe.intent_for(payment["id"])["id"]


def test_3ds_finished_just_before_the_expiry_activates_the_subscription(
    merchant: Merchant, sims: Sims
) -> None:
    sub, intent = incomplete_waiting_for_3ds(merchant)
    late = sims.stripe.authenticate(intent)  # its webhook is not delivered yet
    assert run_due(merchant, sub["id"])["status"] == "active"
    payment = merchant.payment(sub["latest_payment_id"])
    assert payment["status"] == "succeeded"
    assert sims.ledger("stripe", payment["id"]) == 1
    response = deliver(merchant, late)
    assert response.status_code == 200 and response.get_json()["result"].startswith("ignored")
    assert events_of(merchant, payment["id"]).count("payment.succeeded") == 1


def test_stripe_down_at_the_expiry_is_asked_again_after_a_lease(
    merchant: Merchant, sims: Sims
) -> None:
    sub, intent = incomplete_waiting_for_3ds(merchant)
    sims.stripe.inject("500", "/v1/payment_intents/*/cancel", count=10)
    try:
        assert run_due(merchant, sub["id"])["status"] == "incomplete"
    finally:
        sims.stripe.clear_faults()
    assert merchant.payment(sub["latest_payment_id"])["status"] == "requires_action"
    lease = timedelta(seconds=merchant.container.config.payment_lease_seconds)
    with merchant.container.session_factory() as session:
        due = session.get_one(Subscription, sub["id"]).next_event_at
        assert due is not None and utcnow() < due <= utcnow() + lease  # not before a lease
        session.execute(update(Subscription).where(Subscription.id == sub["id"])
                        .values(next_event_at=utcnow()))  # the lease ran out
        session.commit()
    assert run_due(merchant, sub["id"])["status"] == "incomplete_expired"
    assert sims.stripe.intent_for(sub["latest_payment_id"])["status"] == "canceled"
    assert intent == sims.stripe.intent_for(sub["latest_payment_id"])["id"]
