"""Subscriptions over the API with a real worker: lifecycle, dunning, test clocks."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from app.bootstrap import Container
from app.models import OutboxEvent, PaymentMethod
from tests.support import Api, eventually


def plan(api: Api, amount: int = 3000, **fields: Any) -> dict[str, Any]:
    body = {"code": f"p-{uuid.uuid4().hex[:10]}", "name": "Pro", "amount": amount,
            "currency": "usd", "interval": "month", **fields}
    return api.ok(api.post("/plans", body), 201)


def clock(api: Api, at: str) -> dict[str, Any]:
    return api.ok(api.post("/test-clocks", {"frozen_time": at}), 201)


def subscribe(api: Api, plan_id: str, token: str = "tok_ok", clock_id: str | None = None,
              **fields: Any) -> dict[str, Any]:
    customer = api.customer(**({"test_clock_id": clock_id} if clock_id else {}))
    method = api.payment_method(customer["id"], token)
    body = {"customer_id": customer["id"], "plan_id": plan_id,
            "payment_method_id": method["id"], **fields}
    return api.ok(api.post("/subscriptions", body), 201)


def subscription(api: Api, sub_id: str) -> dict[str, Any]:
    return api.ok(api.get(f"/subscriptions/{sub_id}"), 200)


def wait_status(api: Api, sub_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
    return eventually(lambda: (s := subscription(api, sub_id))["status"] == status and s,
                      timeout, what=f"{sub_id} to be {status}")


def active_on_clock(api: Api, at: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A test clock frozen at `at`, and a monthly subscription on it whose first payment
    has succeeded."""
    c = clock(api, at)
    sub = subscribe(api, plan(api)["id"], clock_id=c["id"])
    wait_status(api, sub["id"], "active")
    return c, sub


def advance(api: Api, clock_id: str, to: str, timeout: float = 60) -> None:
    api.ok(api.post(f"/test-clocks/{clock_id}/advance", {"frozen_time": to}), 202)
    eventually(lambda: api.ok(api.get(f"/test-clocks/{clock_id}"), 200)["status"] == "ready",
               timeout, what=f"{clock_id} to be ready")


def payments_of(api: Api, sub_id: str) -> list[dict[str, Any]]:
    return api.ok(api.get(f"/payments?subscription_id={sub_id}&limit=100"), 200)["data"]


def test_first_payment_activates(api: Api, worker: object) -> None:
    sub = subscribe(api, plan(api)["id"])
    assert sub["status"] == "incomplete"
    active = wait_status(api, sub["id"], "active")
    assert active["latest_payment_id"]


def test_first_payment_declined_expires(api: Api, worker: object) -> None:
    sub = subscribe(api, plan(api)["id"], "tok_decline")
    expired = wait_status(api, sub["id"], "incomplete_expired")
    assert expired["cancellation_reason"] == "payment_failed"


def test_incomplete_expires_23_hours_after_creation(api: Api, worker: object) -> None:
    c = clock(api, "2024-05-01T00:00:00Z")
    sub = subscribe(api, plan(api)["id"], "tok_action", clock_id=c["id"])
    advance(api, c["id"], "2024-05-01T22:59:59Z")
    [payment] = payments_of(api, sub["id"])
    assert payment["status"] == "requires_action"
    assert subscription(api, sub["id"])["status"] == "incomplete"
    advance(api, c["id"], "2024-05-01T23:00:00Z")
    expired = subscription(api, sub["id"])
    assert (expired["status"], expired["canceled_at"], expired["cancellation_reason"]) == (
        "incomplete_expired", "2024-05-01T23:00:00Z", "payment_failed")
    [payment] = payments_of(api, sub["id"])  # stopped at the provider: finishing takes nothing
    assert (payment["status"], payment["failure_code"], payment["next_action"]) == (
        "failed", "payment_expired", None)
    advance(api, c["id"], "2024-08-01T00:00:00Z")
    assert payments_of(api, sub["id"]) == [payment]


def events(container: Container, key: str, event_type: str) -> list[dict[str, Any]]:
    with container.uow() as uow:
        rows = uow.session.scalars(
            select(OutboxEvent.payload)
            .where(OutboxEvent.key == key, OutboxEvent.type == event_type)
            .order_by(OutboxEvent.id)
        )
        return list(rows)


def test_a_year_of_monthly_renewals_on_a_test_clock(
    api: Api, worker: object, container: Container
) -> None:
    c, sub = active_on_clock(api, "2024-01-31T00:00:00Z")
    advance(api, c["id"], "2025-01-31T00:00:00Z")
    payments = payments_of(api, sub["id"])
    assert [p["status"] for p in payments] == ["succeeded"] * 13
    after = subscription(api, sub["id"])
    assert after["current_period_start"] == "2025-01-31T00:00:00Z"
    assert after["current_period_end"] == "2025-02-28T00:00:00Z"
    renewed = [e["data"]["object"]["current_period_start"]
               for e in events(container, sub["id"], "subscription.renewed")]
    assert renewed[:4] == ["2024-02-29T00:00:00Z", "2024-03-31T00:00:00Z",
                           "2024-04-30T00:00:00Z", "2024-05-31T00:00:00Z"]
    assert len(renewed) == 12 and renewed[-1] == "2025-01-31T00:00:00Z"


def test_trial_then_recovery_on_second_retry(api: Api, worker: object) -> None:
    c = clock(api, "2024-03-01T00:00:00Z")
    sub = subscribe(api, plan(api, trial_days=7)["id"], "tok_fail_2", clock_id=c["id"])
    assert sub["status"] == "trialing"
    advance(api, c["id"], "2024-03-08T12:00:00Z")
    assert subscription(api, sub["id"])["status"] == "past_due"
    advance(api, c["id"], "2024-03-12T00:00:00Z")
    recovered = subscription(api, sub["id"])
    assert recovered["status"] == "active"
    [payment] = payments_of(api, sub["id"])
    assert [a["status"] for a in payment["attempts"]] == ["failed", "failed", "succeeded"]


def test_dunning_exhausted_cancels_after_four_attempts(api: Api, worker: object) -> None:
    c = clock(api, "2024-05-01T00:00:00Z")
    sub = subscribe(api, plan(api, trial_days=1)["id"], "tok_insufficient_funds",
                    clock_id=c["id"])
    advance(api, c["id"], "2024-06-01T00:00:00Z")
    canceled = subscription(api, sub["id"])
    assert canceled["status"] == "canceled"
    assert canceled["cancellation_reason"] == "payment_failed"
    [payment] = payments_of(api, sub["id"])
    assert len(payment["attempts"]) == 4
    assert payment["status"] == "failed"


def test_provider_down_through_an_advance_fails_the_renewal_and_the_clock_turns_ready(
    api: Api, worker: object, container: Container
) -> None:
    c = clock(api, "2024-05-01T00:00:00Z")
    sub = subscribe(api, plan(api, trial_days=1)["id"], "tok_error", clock_id=c["id"])
    advance(api, c["id"], "2024-05-02T12:00:00Z")
    assert subscription(api, sub["id"])["status"] == "past_due"
    [payment] = payments_of(api, sub["id"])
    assert (payment["status"], payment["failure_code"]) == ("failed", "provider_unavailable")
    assert len(payment["attempts"]) == 1 + container.config.charge_max_retries
    advance(api, c["id"], "2024-06-01T00:00:00Z")  # every dunning retry meets the outage too
    assert subscription(api, sub["id"])["status"] == "canceled"
    charges = api.ok(api.get(f"/sandbox/charges?payment_id={payment['id']}"), 200)
    assert charges["data"] == []


def test_an_outage_at_a_renewal_is_settled_before_the_next_period_is_billed(
    api: Api, worker: object, container: Container
) -> None:
    c, sub = active_on_clock(api, "2024-05-01T00:00:00Z")
    with container.session_factory() as session:  # the card's provider goes down from now
        session.execute(update(PaymentMethod).where(
            PaymentMethod.id == sub["payment_method_id"]).values(token="tok_error"))
        session.commit()
    advance(api, c["id"], "2024-08-15T00:00:00Z")
    canceled = subscription(api, sub["id"])
    assert (canceled["status"], canceled["canceled_at"]) == ("canceled", "2024-06-06T00:00:00Z")
    payments = payments_of(api, sub["id"])
    assert sorted(p["status"] for p in payments) == ["failed", "succeeded"]  # no 2nd renewal


def test_an_advance_waits_for_a_lost_answer_to_be_reconciled(api: Api, worker: object) -> None:
    c = clock(api, "2024-05-01T00:00:00Z")
    sub = subscribe(api, plan(api, trial_days=1)["id"], "tok_timeout", clock_id=c["id"])
    advance(api, c["id"], "2024-05-02T12:00:00Z")
    assert subscription(api, sub["id"])["status"] == "active"
    [payment] = payments_of(api, sub["id"])
    assert payment["status"] == "succeeded"
    charges = api.ok(api.get(f"/sandbox/charges?payment_id={payment['id']}"), 200)
    assert len(charges["data"]) == 1


def test_a_switch_to_yearly_prorates_over_the_year_and_renews_a_whole_year_later(
    api: Api, worker: object
) -> None:
    c = clock(api, "2024-01-31T00:00:00Z")
    monthly, yearly = plan(api, 3000), plan(api, 36_000, interval="year")
    sub = subscribe(api, monthly["id"], clock_id=c["id"])
    wait_status(api, sub["id"], "active")
    advance(api, c["id"], "2024-03-15T00:00:00Z")  # in the period Feb 29 .. Mar 31
    api.ok(api.post(f"/subscriptions/{sub['id']}/change-plan",
                    {"plan_id": yearly["id"], "proration": "create_prorations"}), 200)
    # 16 of 31 days left: credit round(3000 * 16/31) = 1548; the year's price for those 16
    # days of the year Feb 29 2024 .. Feb 28 2025 (365 days): round(36000 * 16/365) = 1578.
    proration = eventually(lambda: [p for p in payments_of(api, sub["id"])
                                    if p["amount"] == 30 and p["status"] == "succeeded"],
                           what="the net proration charge of 30")
    assert len(proration) == 1
    advance(api, c["id"], "2024-04-01T00:00:00Z")
    renewed = subscription(api, sub["id"])
    assert (renewed["current_period_start"], renewed["current_period_end"]) == (
        "2024-03-31T00:00:00Z", "2025-03-31T00:00:00Z")
    assert renewed["billing_anchor"] == "2024-03-31T00:00:00Z"
    assert sorted(p["amount"] for p in payments_of(api, sub["id"])) == [30, 3000, 3000, 36_000]


def test_upgrade_at_half_period_charges_exactly_1500(api: Api, worker: object) -> None:
    c = clock(api, "2024-04-01T00:00:00Z")
    small, big = plan(api, 3000, interval="day", interval_count=2), plan(api, 6000,
                                                                        interval="day",
                                                                        interval_count=2)
    sub = subscribe(api, small["id"], clock_id=c["id"])
    wait_status(api, sub["id"], "active")
    advance(api, c["id"], "2024-04-02T00:00:00Z")
    changed = api.ok(api.post(f"/subscriptions/{sub['id']}/change-plan",
                              {"plan_id": big["id"], "proration": "create_prorations"}), 200)
    assert changed["plan_id"] == big["id"]
    proration = eventually(lambda: [p for p in payments_of(api, sub["id"])
                                    if p["amount"] == 1500 and p["status"] == "succeeded"],
                           what="the proration charge")
    assert len(proration) == 1


@pytest.mark.parametrize("action", ["resume"])
def test_conflicting_action_is_409(api: Api, worker: object, action: str) -> None:
    sub = subscribe(api, plan(api)["id"])
    response = api.post(f"/subscriptions/{sub['id']}/{action}")
    assert response.status_code == 409
    assert response.get_json()["code"] == "subscription_not_paused"


def test_pause_and_resume_charges_a_new_period(api: Api, worker: object) -> None:
    c, sub = active_on_clock(api, "2024-01-10T00:00:00Z")
    paused = api.ok(api.post(f"/subscriptions/{sub['id']}/pause"), 200)
    assert paused["status"] == "paused"
    advance(api, c["id"], "2024-03-01T00:00:00Z")
    assert len(payments_of(api, sub["id"])) == 1  # no charges while paused
    resumed = api.ok(api.post(f"/subscriptions/{sub['id']}/resume"), 200)
    assert resumed["current_period_start"] == "2024-03-01T00:00:00Z"
    assert resumed["billing_anchor"] == "2024-03-01T00:00:00Z"
    eventually(lambda: len([p for p in payments_of(api, sub["id"])
                            if p["status"] == "succeeded"]) == 2, what="the resume charge")


def test_cancel_at_period_end(api: Api, worker: object) -> None:
    c, sub = active_on_clock(api, "2024-01-10T00:00:00Z")
    pending = api.ok(api.post(f"/subscriptions/{sub['id']}/cancel", {"at_period_end": True}), 200)
    assert pending["cancel_at_period_end"] is True and pending["status"] == "active"
    advance(api, c["id"], "2024-03-01T00:00:00Z")
    ended = subscription(api, sub["id"])
    assert ended["status"] == "canceled"
    assert ended["canceled_at"] == "2024-02-10T00:00:00Z"
    assert len(payments_of(api, sub["id"])) == 1
