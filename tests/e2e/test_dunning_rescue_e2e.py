"""A past_due subscription rescued by a new card, as a merchant's backend does it over HTTP:
the real gunicorn, worker fleet and scheduler, on a test clock."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.stack import Client
from tests.support import eventually

pytestmark = pytest.mark.e2e


def _method(client: Client, customer_id: str, token: str) -> str:
    body = {"provider": "sandbox", "token": token}
    return str(client.ok(client.post(f"/customers/{customer_id}/payment-methods", body),
                         201)["id"])


def _advance(client: Client, clock_id: str, to: str) -> None:
    client.ok(client.post(f"/test-clocks/{clock_id}/advance", {"frozen_time": to}), 202)
    eventually(lambda: client.ok(client.get(f"/test-clocks/{clock_id}"), 200)["status"]
               == "ready", 60, what=f"{clock_id} to reach {to}")


def _subscription(client: Client, sub_id: str) -> dict[str, Any]:
    return client.ok(client.get(f"/subscriptions/{sub_id}"), 200)


def test_a_past_due_subscription_is_rescued_by_a_new_card(client: Client) -> None:
    clock = client.ok(client.post("/test-clocks", {"frozen_time": "2025-03-31T00:00:00Z"}), 201)
    customer = client.ok(client.post("/customers", {"email": "ada@example.com",
                                                    "test_clock_id": clock["id"]}), 201)
    plan = client.ok(client.post("/plans", {
        "code": f"pro-{uuid.uuid4().hex[:8]}", "name": "Pro", "amount": 3000, "currency": "usd",
        "interval": "month"}), 201)
    expiring = _method(client, customer["id"], "tok_ok")
    sub = client.ok(client.post("/subscriptions", {
        "customer_id": customer["id"], "plan_id": plan["id"], "payment_method_id": expiring}),
        201)
    eventually(lambda: _subscription(client, sub["id"])["status"] == "active", 30,
               what="the first payment")
    # The card on file starts to be declined (as an expired card is) before the renewal.
    declining = _method(client, customer["id"], "tok_insufficient_funds")
    client.ok(client.post(f"/subscriptions/{sub['id']}", {"payment_method_id": declining}), 200)

    _advance(client, clock["id"], "2025-04-30T01:00:00Z")
    past_due = _subscription(client, sub["id"])
    assert past_due["status"] == "past_due"
    renewal_id = past_due["latest_payment_id"]
    renewal = client.ok(client.get(f"/payments/{renewal_id}"), 200)
    assert (renewal["status"], renewal["failure_code"]) == ("failed", "insufficient_funds")

    new_card = _method(client, customer["id"], "tok_ok")
    updated = client.ok(client.post(f"/subscriptions/{sub['id']}",
                                    {"payment_method_id": new_card}), 200)
    assert (updated["status"], updated["payment_method_id"]) == ("past_due", new_card)
    retried = client.ok(client.post(f"/payments/{renewal_id}/retry", {}), 202)
    assert (retried["status"], retried["payment_method_id"]) == ("pending", new_card)

    paid = eventually(lambda: (p := client.ok(client.get(f"/payments/{renewal_id}"), 200))[
        "status"] == "succeeded" and p, 30, what="the retry to succeed")
    assert [a["status"] for a in paid["attempts"]] == ["failed", "succeeded"]
    assert len(client.charges(renewal_id)) == 1
    rescued = eventually(lambda: (s := _subscription(client, sub["id"]))["status"] == "active"
                         and s, 30, what="the subscription to recover")
    assert rescued["current_period_end"] == "2025-05-31T00:00:00Z"
    client.ok(client.post(f"/payments/{renewal_id}/retry", {}), 409)

    # The dunning retries that were scheduled (days 1, 3 and 5) do not run any more ...
    _advance(client, clock["id"], "2025-05-06T00:00:00Z")
    assert len(client.ok(client.get(f"/payments/{renewal_id}"), 200)["attempts"]) == 2
    # ... and the next renewal charges the new card.
    _advance(client, clock["id"], "2025-05-31T01:00:00Z")
    after = _subscription(client, sub["id"])
    assert after["status"] == "active" and after["latest_payment_id"] != renewal_id
    next_renewal = client.ok(client.get(f"/payments/{after['latest_payment_id']}"), 200)
    assert (next_renewal["status"], next_renewal["payment_method_id"]) == ("succeeded",
                                                                           new_card)
