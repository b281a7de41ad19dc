"""Subscriptions, plans and test clocks at the API's edges: validation, scope, conflicts, events.

Complements test_subscriptions.py (the happy lifecycle): every refused request answers a
stable problem+json and writes nothing; every state change writes its own outbox event.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import func, select, update
from werkzeug.test import TestResponse

from app.bootstrap import Container
from app.models import OutboxEvent, PaymentMethod, Plan, SandboxCharge, Subscription
from tests.integration.test_subscriptions import (
    active_on_clock,
    advance,
    clock,
    payments_of,
    plan,
    subscribe,
    subscription,
    wait_status,
)
from tests.support import Api, eventually


def problem(response: TestResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is a problem+json of `status` (and `code`); returns its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json()
    if code is not None:
        assert body["code"] == code, body
    return body


def plan_body(**fields: Any) -> dict[str, Any]:
    return {"code": f"p-{uuid.uuid4().hex[:10]}", "name": "Pro", "amount": 3000,
            "currency": "usd", "interval": "month", **fields}


def plan_count(container: Container, tenant_id: str) -> int:
    with container.session_factory() as session:
        return int(session.scalar(
            select(func.count()).select_from(Plan).where(Plan.tenant_id == tenant_id)) or 0)


def sub_events(container: Container, sub_id: str) -> list[tuple[str, str]]:
    """(type, status of the object in the event) of every outbox event of `sub_id`, in order."""
    with container.session_factory() as session:
        payloads = session.scalars(
            select(OutboxEvent.payload).where(OutboxEvent.key == sub_id).order_by(OutboxEvent.id)
        )
        return [(p["type"], p["data"]["object"]["status"]) for p in payloads]


def types(container: Container, sub_id: str) -> list[str]:
    return [t for t, _ in sub_events(container, sub_id)]


def charges(container: Container, payment_id: str) -> int:
    with container.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(SandboxCharge)
                                  .where(SandboxCharge.payment_id == payment_id)) or 0)


def set_token(container: Container, method_id: str, token: str) -> None:
    """Swap the card behind a payment method (as if the customer's card started declining)."""
    with container.session_factory() as session:
        session.execute(update(PaymentMethod).where(PaymentMethod.id == method_id)
                        .values(token=token))
        session.commit()


@contextmanager
def row_locked(container: Container, sub_id: str) -> Iterator[None]:
    """Hold the subscription's row lock, so anything that needs it waits until we let go."""
    with container.session_factory() as session:
        session.execute(select(Subscription.id).where(Subscription.id == sub_id)
                        .with_for_update())
        yield
        session.rollback()


# Plans


@pytest.mark.parametrize(("field", "value"), [
    ("code", ""), ("code", "x" * 101), ("code", "has space"), ("code", "-lead"), ("code", 7),
    ("name", ""), ("name", "n" * 501), ("name", None),
    ("amount", 0), ("amount", 100_000_000), ("amount", "3000"), ("amount", 30.0),
    ("currency", "USD"), ("currency", "usdd"), ("currency", "xxx"),
    ("interval", "fortnight"), ("interval", None),
    ("interval_count", 0), ("interval_count", 13), ("interval_count", "1"),
    ("trial_days", -1), ("trial_days", 731), ("trial_days", 1.5),
])
def test_plan_field_out_of_range_is_422_and_writes_nothing(
    api: Api, container: Container, field: str, value: Any
) -> None:
    body = problem(api.post("/plans", plan_body(**{field: value})), 422)
    assert [e["field"] for e in body["errors"]] == [field]
    assert plan_count(container, api.tenant_id) == 0


def test_plan_reports_every_bad_field_and_each_missing_one(api: Api) -> None:
    body = problem(api.post("/plans", {"interval_count": 13, "trial_days": 731, "extra": 1}), 422)
    fields = {e["field"] for e in body["errors"]}
    assert {"code", "name", "amount", "currency", "interval", "interval_count",
            "trial_days", "extra"} <= fields


def test_plan_bounds_are_inclusive(api: Api) -> None:
    low = api.ok(api.post("/plans", plan_body(amount=1, interval_count=1, trial_days=0)), 201)
    high = api.ok(api.post("/plans", plan_body(amount=99_999_999, interval_count=12,
                                               trial_days=730, interval="year")), 201)
    assert (low["amount"], high["interval_count"], high["trial_days"]) == (1, 12, 730)
    assert api.ok(api.get(f"/plans/{high['id']}"), 200) == high


def test_plan_code_is_unique_per_tenant_and_mode(api: Api, app: Any, container: Container) -> None:
    first = api.ok(api.post("/plans", plan_body(code="pro-monthly")), 201)
    problem(api.post("/plans", plan_body(code="pro-monthly", amount=5)), 409, "plan_code_taken")
    assert plan_count(container, api.tenant_id) == 1
    live = api.ok(api.post("/plans", plan_body(code="pro-monthly"), key=api.live_key), 201)
    assert live["livemode"] is True and live["id"] != first["id"]
    other = Api.for_new_tenant(app)
    theirs = other.ok(other.post("/plans", plan_body(code="pro-monthly")), 201)
    assert theirs["code"] == "pro-monthly"
    # Each mode sees only its own plan.
    problem(api.get(f"/plans/{live['id']}"), 404)
    problem(api.get(f"/plans/{first['id']}", key=api.live_key), 404)
    problem(other.get(f"/plans/{first['id']}"), 404)


def test_plan_list_pages_newest_first(api: Api) -> None:
    made = [api.ok(api.post("/plans", plan_body()), 201)["id"] for _ in range(5)]
    first = api.ok(api.get("/plans?limit=3"), 200)
    assert [p["id"] for p in first["data"]] == made[::-1][:3] and first["has_more"] is True
    rest = api.ok(api.get(f"/plans?limit=3&starting_after={made[2]}"), 200)
    assert [p["id"] for p in rest["data"]] == made[1::-1] and rest["has_more"] is False


def test_archived_plan_refuses_new_subscriptions_but_existing_ones_renew(
    api: Api, worker: object
) -> None:
    c = clock(api, "2024-01-15T00:00:00Z")
    p = plan(api)
    sub = subscribe(api, p["id"], clock_id=c["id"])
    wait_status(api, sub["id"], "active")
    archived = api.ok(api.post(f"/plans/{p['id']}/archive"), 200)
    assert archived["archived"] is True
    assert api.ok(api.post(f"/plans/{p['id']}/archive"), 200)["archived"] is True

    customer = api.customer()
    method = api.payment_method(customer["id"])
    body = {"customer_id": customer["id"], "plan_id": p["id"], "payment_method_id": method["id"]}
    problem(api.post("/subscriptions", body), 422, "plan_archived")
    listed = api.ok(api.get(f"/subscriptions?customer_id={customer['id']}"), 200)
    assert listed["data"] == []

    advance(api, c["id"], "2024-02-15T00:00:00Z")
    assert [p["status"] for p in payments_of(api, sub["id"])] == ["succeeded"] * 2
    assert subscription(api, sub["id"])["current_period_start"] == "2024-02-15T00:00:00Z"


# Creating subscriptions: ids and scope


def test_subscription_with_another_customers_method_is_422(api: Api, container: Container) -> None:
    p = plan(api)
    ada, bob = api.customer(), api.customer()
    bobs = api.payment_method(bob["id"])
    body = {"customer_id": ada["id"], "plan_id": p["id"], "payment_method_id": bobs["id"]}
    err = problem(api.post("/subscriptions", body), 422)
    assert [e["field"] for e in err["errors"]] == ["payment_method_id"]
    assert api.ok(api.get("/subscriptions"), 200)["data"] == []


@pytest.mark.parametrize("missing", ["customer_id", "plan_id", "payment_method_id"])
def test_subscription_with_unknown_or_foreign_ids_is_404(
    api: Api, app: Any, missing: str
) -> None:
    other = Api.for_new_tenant(app)
    theirs_customer = other.customer()
    theirs = {"customer_id": theirs_customer["id"], "plan_id": plan(other)["id"],
              "payment_method_id": other.payment_method(theirs_customer["id"])["id"]}
    customer = api.customer()
    mine = {"customer_id": customer["id"], "plan_id": plan(api)["id"],
            "payment_method_id": api.payment_method(customer["id"])["id"]}
    prefix = missing.split("_")[0] if missing != "payment_method_id" else "pm"
    for value in (f"{prefix}_doesnotexist", theirs[missing]):
        problem(api.post("/subscriptions", {**mine, missing: value}), 404, "resource_missing")
    # The tenant's own test-mode ids do not exist for its live key either.
    problem(api.post("/subscriptions", mine, key=api.live_key), 404, "resource_missing")
    assert api.ok(api.get("/subscriptions"), 200)["data"] == []


def test_another_tenants_subscription_is_404_for_every_action(api: Api, app: Any) -> None:
    sub = subscribe(api, plan(api)["id"], "tok_action")
    other = Api.for_new_tenant(app)
    problem(other.get(f"/subscriptions/{sub['id']}"), 404)
    for action, body in [("cancel", {}), ("pause", None), ("resume", None),
                         ("change-plan", {"plan_id": plan(other)["id"]})]:
        problem(other.post(f"/subscriptions/{sub['id']}/{action}", body), 404)
    assert subscription(api, sub["id"])["status"] == "incomplete"


def test_subscription_trial_days_overrides_the_plans(api: Api) -> None:
    p = plan(api, trial_days=14)
    no_trial = subscribe(api, p["id"], "tok_action", trial_days=0)
    assert no_trial["status"] == "incomplete" and no_trial["trial_end"] is None
    short = subscribe(api, p["id"], trial_days=3)
    assert short["status"] == "trialing"
    assert short["trial_end"] == short["current_period_end"]


# Transitions that are not allowed


def _subscriptions_by_status(api: Api) -> dict[str, dict[str, Any]]:
    """One subscription in each status a refused action can meet, made through the API."""
    p, trial = plan(api), plan(api, trial_days=30)
    made = {"incomplete": subscribe(api, p["id"], "tok_action"),
            "incomplete_expired": subscribe(api, p["id"], "tok_decline"),
            "trialing": subscribe(api, trial["id"]),
            **{s: subscribe(api, p["id"]) for s in ("active", "paused", "canceled")}}
    wait_status(api, made["incomplete_expired"]["id"], "incomplete_expired")
    for status in ("active", "paused", "canceled"):
        wait_status(api, made[status]["id"], "active")
    api.ok(api.post(f"/subscriptions/{made['paused']['id']}/pause"), 200)
    api.ok(api.post(f"/subscriptions/{made['canceled']['id']}/cancel", {}), 200)
    return {status: subscription(api, sub["id"]) for status, sub in made.items()}


@pytest.fixture(scope="module")
def by_status(app: Any, worker: object) -> tuple[Api, dict[str, dict[str, Any]]]:
    """A tenant with a subscription in each status (the refused actions leave them so)."""
    api = Api.for_new_tenant(app)
    return api, _subscriptions_by_status(api)


REFUSED = [
    ("canceled", "cancel", {}, "subscription_canceled"),
    ("canceled", "cancel", {"at_period_end": True}, "subscription_canceled"),
    ("canceled", "pause", None, "subscription_canceled"),
    ("canceled", "resume", None, "subscription_canceled"),
    ("canceled", "change-plan", "PLAN", "subscription_canceled"),
    ("paused", "pause", None, "subscription_paused"),
    ("paused", "change-plan", "PLAN", "subscription_paused"),
    ("paused", "cancel", {"at_period_end": True}, "subscription_not_active"),
    ("active", "resume", None, "subscription_not_paused"),
    ("trialing", "resume", None, "subscription_not_paused"),
    ("incomplete", "pause", None, "subscription_not_active"),
    ("incomplete", "resume", None, "subscription_not_paused"),
    ("incomplete", "change-plan", "PLAN", "subscription_not_active"),
    ("incomplete", "cancel", {"at_period_end": True}, "subscription_not_active"),
    ("incomplete_expired", "cancel", {}, "subscription_incomplete_expired"),
    ("incomplete_expired", "resume", None, "subscription_incomplete_expired"),
    ("incomplete_expired", "change-plan", "PLAN", "subscription_incomplete_expired"),
]


@pytest.mark.parametrize(("status", "action", "body", "code"), REFUSED,
                         ids=[f"{s}-{a}-{c}" for s, a, _, c in REFUSED])
def test_disallowed_transition_is_409_with_a_stable_code_and_changes_nothing(
    by_status: tuple[Api, dict[str, dict[str, Any]]], container: Container,
    status: str, action: str, body: Any, code: str,
) -> None:
    api, subs = by_status
    sub = subs[status]
    assert sub["status"] == status
    if body == "PLAN":
        body = {"plan_id": plan(api)["id"]}
    before = sub_events(container, sub["id"])
    err = problem(api.post(f"/subscriptions/{sub['id']}/{action}", body), 409, code)
    assert err["type"].endswith(f"/errors/{code}")
    after = subscription(api, sub["id"])
    assert after == sub
    assert sub_events(container, sub["id"]) == before


def test_change_plan_to_another_currency_is_422(
    by_status: tuple[Api, dict[str, dict[str, Any]]]
) -> None:
    api, subs = by_status
    sub = subs["active"]
    eur = plan(api, currency="eur")
    problem(api.post(f"/subscriptions/{sub['id']}/change-plan", {"plan_id": eur["id"]}), 422,
            "currency_mismatch")
    assert subscription(api, sub["id"])["plan_id"] == sub["plan_id"]


def test_change_plan_to_an_archived_or_unknown_plan(
    by_status: tuple[Api, dict[str, dict[str, Any]]]
) -> None:
    api, subs = by_status
    sub = subs["active"]
    old = plan(api)
    api.ok(api.post(f"/plans/{old['id']}/archive"), 200)
    url = f"/subscriptions/{sub['id']}/change-plan"
    problem(api.post(url, {"plan_id": old["id"]}), 422, "plan_archived")
    problem(api.post(url, {"plan_id": "plan_nope"}), 404)
    problem(api.post(url, {"plan_id": sub["plan_id"], "proration": "always"}), 422)


# Listing


def test_list_filters_by_customer_and_status_and_pages(api: Api, worker: object) -> None:
    p = plan(api)
    ada, bob = api.customer(), api.customer()
    methods = {c["id"]: api.payment_method(c["id"])["id"] for c in (ada, bob)}

    def make(customer: dict[str, Any]) -> str:
        body = {"customer_id": customer["id"], "plan_id": p["id"],
                "payment_method_id": methods[customer["id"]]}
        return str(api.ok(api.post("/subscriptions", body), 201)["id"])

    adas = [make(ada) for _ in range(3)]
    bobs = [make(bob) for _ in range(2)]
    for sub_id in adas + bobs:
        wait_status(api, sub_id, "active")
    api.ok(api.post(f"/subscriptions/{adas[1]}/cancel", {}), 200)

    def ids(query: str) -> list[str]:
        return [s["id"] for s in api.ok(api.get(f"/subscriptions?{query}"), 200)["data"]]

    assert ids(f"customer_id={ada['id']}") == adas[::-1]
    assert ids(f"customer_id={bob['id']}") == bobs[::-1]
    assert ids("status=canceled") == [adas[1]]
    assert ids(f"customer_id={ada['id']}&status=active") == [adas[2], adas[0]]
    assert ids(f"customer_id={bob['id']}&status=canceled") == []
    assert ids("limit=100") == (adas + bobs)[::-1]
    first = api.ok(api.get("/subscriptions?limit=2"), 200)
    assert [s["id"] for s in first["data"]] == bobs[::-1] and first["has_more"] is True
    second = api.ok(api.get(f"/subscriptions?limit=2&starting_after={bobs[0]}"), 200)
    assert [s["id"] for s in second["data"]] == [adas[2], adas[1]] and second["has_more"]
    last = api.ok(api.get(f"/subscriptions?limit=2&starting_after={adas[1]}"), 200)
    assert [s["id"] for s in last["data"]] == [adas[0]] and last["has_more"] is False
    problem(api.get("/subscriptions?status=sleeping"), 422)
    problem(api.get("/subscriptions?limit=0"), 422)
    assert api.ok(api.get("/subscriptions", key=api.live_key), 200)["data"] == []


# Test clocks


def test_test_clocks_are_test_mode_only(api: Api) -> None:
    c = clock(api, "2024-01-01T00:00:00Z")
    live = api.live_key
    problem(api.post("/test-clocks", {"frozen_time": "2024-01-01T00:00:00Z"}, key=live), 403,
            "test_mode_only")
    problem(api.get(f"/test-clocks/{c['id']}", key=live), 403)
    problem(api.post(f"/test-clocks/{c['id']}/advance", {"frozen_time": "2024-02-01T00:00:00Z"},
                     key=live), 403)
    problem(api.post("/customers", {"email": "a@b.co", "test_clock_id": c["id"]}, key=live), 403)
    assert api.ok(api.get(f"/test-clocks/{c['id']}"), 200)["frozen_time"] == "2024-01-01T00:00:00Z"


def test_test_clock_only_moves_forward(api: Api) -> None:
    c = clock(api, "2024-01-01T00:00:00Z")
    for to in ("2023-12-31T23:59:59Z", "2024-01-01T00:00:00Z"):
        problem(api.post(f"/test-clocks/{c['id']}/advance", {"frozen_time": to}), 422,
                "test_clock_backwards")
    problem(api.post(f"/test-clocks/{c['id']}/advance", {"frozen_time": "2024-02-01"}), 422)
    problem(api.post(f"/test-clocks/{c['id']}/advance", {}), 422)
    problem(api.post("/test-clocks", {"frozen_time": "2024-01-01T00:00:00"}), 422)
    assert api.ok(api.get(f"/test-clocks/{c['id']}"), 200) == c


def test_advancing_a_clock_that_is_still_advancing_is_409(
    api: Api, worker: object, container: Container
) -> None:
    c, sub = active_on_clock(api, "2024-01-01T00:00:00Z")
    url = f"/test-clocks/{c['id']}/advance"
    with row_locked(container, sub["id"]):  # the advance waits for our lock on its renewal
        started = api.ok(api.post(url, {"frozen_time": "2024-02-01T00:00:00Z"}), 202)
        assert started["status"] == "advancing"
        problem(api.post(url, {"frozen_time": "2024-03-01T00:00:00Z"}), 409,
                "test_clock_advancing")
    ready = eventually(lambda: (got := api.ok(api.get(f"/test-clocks/{c['id']}"), 200))
                       ["status"] == "ready" and got, what="the clock to be ready")
    assert ready["frozen_time"] == "2024-02-01T00:00:00Z"
    assert len(payments_of(api, sub["id"])) == 2


def test_customer_on_another_tenants_clock_is_404(api: Api, app: Any) -> None:
    other = Api.for_new_tenant(app)
    theirs = clock(other, "2024-01-01T00:00:00Z")
    problem(api.post("/customers", {"email": "a@b.co", "test_clock_id": theirs["id"]}), 404)
    problem(api.post("/customers", {"email": "a@b.co", "test_clock_id": "clock_nope"}), 404)
    problem(api.get(f"/test-clocks/{theirs['id']}"), 404)
    problem(api.post(f"/test-clocks/{theirs['id']}/advance",
                     {"frozen_time": "2024-02-01T00:00:00Z"}), 404)
    assert api.ok(api.get("/customers"), 200)["data"] == []


def test_subscribing_the_same_instant_on_a_clock_uses_clock_time(api: Api) -> None:
    c = clock(api, "2024-01-31T10:00:00Z")
    sub = subscribe(api, plan(api)["id"], "tok_action", clock_id=c["id"])
    assert sub["created_at"] == sub["current_period_start"] == "2024-01-31T10:00:00Z"
    assert sub["current_period_end"] == "2024-02-29T10:00:00Z"


# Events


def test_trial_will_end_is_written_three_days_before_trial_end_exactly_once(
    api: Api, worker: object, container: Container
) -> None:
    c = clock(api, "2024-06-01T00:00:00Z")
    sub = subscribe(api, plan(api, trial_days=10)["id"], clock_id=c["id"])
    assert sub["trial_end"] == "2024-06-11T00:00:00Z"

    def notices() -> int:
        return types(container, sub["id"]).count("subscription.trial_will_end")

    advance(api, c["id"], "2024-06-07T23:59:59Z")
    assert notices() == 0
    advance(api, c["id"], "2024-06-08T00:00:00Z")
    assert notices() == 1
    advance(api, c["id"], "2024-06-10T00:00:00Z")
    assert notices() == 1
    advance(api, c["id"], "2024-06-12T00:00:00Z")
    assert types(container, sub["id"]) == [
        "subscription.created", "subscription.trial_will_end", "subscription.activated"]
    [payment] = payments_of(api, sub["id"])
    assert payment["status"] == "succeeded" and charges(container, payment["id"]) == 1


def test_trial_canceled_at_period_end_ends_without_a_charge(
    api: Api, worker: object, container: Container
) -> None:
    c = clock(api, "2024-06-01T00:00:00Z")
    sub = subscribe(api, plan(api, trial_days=10)["id"], clock_id=c["id"])
    api.ok(api.post(f"/subscriptions/{sub['id']}/cancel", {"at_period_end": True}), 200)
    advance(api, c["id"], "2024-07-01T00:00:00Z")
    ended = subscription(api, sub["id"])
    assert (ended["status"], ended["canceled_at"]) == ("canceled", "2024-06-11T00:00:00Z")
    assert payments_of(api, sub["id"]) == []
    assert types(container, sub["id"]) == [
        "subscription.created", "subscription.trial_will_end", "subscription.canceled"]


def test_short_trial_sends_its_notice_at_once(api: Api, worker: object,
                                              container: Container) -> None:
    c = clock(api, "2024-06-01T00:00:00Z")
    sub = subscribe(api, plan(api, trial_days=2)["id"], clock_id=c["id"])
    advance(api, c["id"], "2024-06-01T00:00:01Z")
    assert types(container, sub["id"]) == ["subscription.created",
                                           "subscription.trial_will_end"]


def test_lifecycle_writes_one_event_per_change_in_order(
    api: Api, worker: object, container: Container
) -> None:
    c = clock(api, "2024-01-15T00:00:00Z")
    customer = api.customer(test_clock_id=c["id"])
    method = api.payment_method(customer["id"])
    body = {"customer_id": customer["id"], "plan_id": plan(api)["id"],
            "payment_method_id": method["id"]}
    sub = api.ok(api.post("/subscriptions", body), 201)
    wait_status(api, sub["id"], "active")
    advance(api, c["id"], "2024-03-15T00:00:00Z")
    set_token(container, method["id"], "tok_insufficient_funds")
    advance(api, c["id"], "2024-04-15T00:00:00Z")
    assert subscription(api, sub["id"])["status"] == "past_due"
    advance(api, c["id"], "2024-04-25T00:00:00Z")

    assert sub_events(container, sub["id"]) == [
        ("subscription.created", "incomplete"),
        ("subscription.activated", "active"),
        ("subscription.renewed", "active"),
        ("subscription.renewed", "active"),
        ("subscription.past_due", "past_due"),
        ("subscription.canceled", "canceled"),
    ]
    ended = subscription(api, sub["id"])
    assert ended["cancellation_reason"] == "payment_failed"
    payments = payments_of(api, sub["id"])
    assert [p["status"] for p in payments] == ["failed", "succeeded", "succeeded", "succeeded"]
    assert len(payments[0]["attempts"]) == 4
    assert [charges(container, p["id"]) for p in payments] == [0, 1, 1, 1]


def test_actions_write_their_events(api: Api, worker: object, container: Container) -> None:
    c, sub = active_on_clock(api, "2024-01-15T00:00:00Z")
    url = f"/subscriptions/{sub['id']}"
    api.ok(api.post(f"{url}/change-plan", {"plan_id": plan(api)["id"], "proration": "none"}), 200)
    api.ok(api.post(f"{url}/pause"), 200)
    advance(api, c["id"], "2024-02-01T00:00:00Z")
    api.ok(api.post(f"{url}/resume"), 200)
    eventually(lambda: "subscription.renewed" in types(container, sub["id"]),
               what="the resume charge to settle")
    api.ok(api.post(f"{url}/cancel", {"at_period_end": False}), 200)
    assert sub_events(container, sub["id"]) == [
        ("subscription.created", "incomplete"),
        ("subscription.activated", "active"),
        ("subscription.plan_changed", "active"),
        ("subscription.paused", "paused"),
        ("subscription.resumed", "active"),
        ("subscription.renewed", "active"),
        ("subscription.canceled", "canceled"),
    ]


def test_resume_at_the_instant_of_a_paid_period_charges_it_once(
    api: Api, worker: object, container: Container
) -> None:
    c, sub = active_on_clock(api, "2024-01-15T00:00:00Z")
    url = f"/subscriptions/{sub['id']}"
    api.ok(api.post(f"{url}/pause"), 200)
    resumed = api.ok(api.post(f"{url}/resume"), 200)
    assert resumed["status"] == "active"
    assert resumed["current_period_start"] == "2024-01-15T00:00:00Z"
    [payment] = payments_of(api, sub["id"])
    assert payment["status"] == "succeeded" and charges(container, payment["id"]) == 1
    advance(api, c["id"], "2024-02-15T00:00:00Z")
    assert [p["status"] for p in payments_of(api, sub["id"])] == ["succeeded"] * 2


def test_advancing_right_after_subscribing_bills_every_period(
    api: Api, worker: object, container: Container
) -> None:
    """The first payment may still be in flight when the advance starts; nothing is skipped."""
    c = clock(api, "2024-01-31T00:00:00Z")
    sub = subscribe(api, plan(api)["id"], clock_id=c["id"])
    advance(api, c["id"], "2024-04-30T00:00:00Z")
    payments = payments_of(api, sub["id"])
    assert [p["status"] for p in payments] == ["succeeded"] * 4
    assert all(charges(container, p["id"]) == 1 for p in payments)
    after = subscription(api, sub["id"])
    assert (after["current_period_start"], after["current_period_end"]) == (
        "2024-04-30T00:00:00Z", "2024-05-31T00:00:00Z")


# Credits


def test_downgrade_credit_reduces_the_next_renewal(
    api: Api, worker: object, container: Container
) -> None:
    c = clock(api, "2024-04-01T00:00:00Z")
    big = plan(api, 6000, interval="day", interval_count=2)
    small = plan(api, 3000, interval="day", interval_count=2)
    sub = subscribe(api, big["id"], clock_id=c["id"])
    wait_status(api, sub["id"], "active")
    advance(api, c["id"], "2024-04-02T00:00:00Z")
    changed = api.ok(api.post(f"/subscriptions/{sub['id']}/change-plan",
                              {"plan_id": small["id"], "proration": "create_prorations"}), 200)
    assert changed["credit_balance"] == 1500  # 3000 unused of big - 1500 unused of small
    assert len(payments_of(api, sub["id"])) == 1  # a net credit charges nothing now
    advance(api, c["id"], "2024-04-03T00:00:00Z")
    assert subscription(api, sub["id"])["credit_balance"] == 0
    advance(api, c["id"], "2024-04-05T00:00:00Z")
    payments = payments_of(api, sub["id"])
    assert [(p["amount"], p["status"]) for p in payments] == [
        (3000, "succeeded"), (1500, "succeeded"), (6000, "succeeded")]
    assert all(charges(container, p["id"]) == 1 for p in payments)
    with container.session_factory() as session:
        amounts = session.scalars(select(SandboxCharge.amount)
                                  .where(SandboxCharge.payment_id.in_([p["id"] for p in payments]))
                                  .order_by(SandboxCharge.created_at))
        assert list(amounts) == [6000, 1500, 3000]


def test_credit_covering_whole_renewals_renews_without_payment(
    api: Api, worker: object, container: Container
) -> None:
    c = clock(api, "2024-04-01T00:00:00Z")
    big = plan(api, 9000, interval="day", interval_count=2)
    small = plan(api, 1000, interval="day", interval_count=2)
    sub = subscribe(api, big["id"], clock_id=c["id"])
    wait_status(api, sub["id"], "active")
    changed = api.ok(api.post(f"/subscriptions/{sub['id']}/change-plan",
                              {"plan_id": small["id"]}), 200)
    assert changed["credit_balance"] == 8000  # changed at the period's first instant
    advance(api, c["id"], "2024-04-09T00:00:00Z")
    covered = subscription(api, sub["id"])
    assert covered["status"] == "active" and covered["credit_balance"] == 4000
    assert covered["current_period_start"] == "2024-04-09T00:00:00Z"
    assert len(payments_of(api, sub["id"])) == 1
    assert types(container, sub["id"]).count("subscription.renewed") == 4
    advance(api, c["id"], "2024-04-19T00:00:00Z")
    payments = payments_of(api, sub["id"])
    assert [(p["amount"], p["status"]) for p in payments] == [(1000, "succeeded"),
                                                              (9000, "succeeded")]
    assert subscription(api, sub["id"])["credit_balance"] == 0
