"""The /pay path from request to a settled payment, through a real worker."""

from __future__ import annotations

from tests.support import Api


def test_payment_succeeds_and_is_charged_once(api: Api, worker: object) -> None:
    created = api.pay("tok_ok")
    assert created["status"] == "pending"
    payment = api.settled(created["id"])
    assert payment["status"] == "succeeded"
    assert [a["status"] for a in payment["attempts"]] == ["succeeded"]
    charges = api.ok(api.get(f"/sandbox/charges?payment_id={created['id']}"), 200)["data"]
    assert len(charges) == 1
    assert charges[0]["idempotency_key"] == f"{created['id']}:1"
