"""Idempotency-Key: replays, reuse with another body, per-tenant keys, concurrent duplicates."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from flask import Flask
from sqlalchemy import text, update
from werkzeug.test import TestResponse

from app.bootstrap import Container
from app.clock import utcnow
from app.models import IdempotencyKey
from app.scheduler.runner import prune_job
from app.services import idempotency
from app.services.scope import Scope
from tests.integration.checks import assert_problem, rows
from tests.support import Api, eventually, lock_waits


def pay_body(api: Api, **changes: Any) -> dict[str, Any]:
    customer = api.customer()
    method = api.payment_method(customer["id"])
    return {"amount": 1999, "currency": "usd", "customer_id": customer["id"],
            "payment_method_id": method["id"], **changes}


def pay(api: Api, body: Any, key: str, **kwargs: Any) -> TestResponse:
    return api.post("/pay", body, headers={"Idempotency-Key": key}, **kwargs)


def test_a_replay_returns_the_first_answer_and_creates_nothing(
    api: Api, container: Container
) -> None:
    body = pay_body(api, metadata={"order": "42"})
    key = uuid.uuid4().hex
    first = pay(api, body, key)
    created = api.ok(first, 202)
    assert "Idempotent-Replayed" not in first.headers
    after_first = rows(container, api.tenant_id)
    for _ in range(3):
        again = pay(api, body, key)
        assert again.status_code == 202
        assert again.get_json() == created
        assert again.headers["Idempotent-Replayed"] == "true"
        location = f"/payments/{created['id']}"
        assert again.headers["Location"] == first.headers["Location"] == location
    assert rows(container, api.tenant_id) == after_first
    assert after_first.payments == 1


def test_the_same_body_written_differently_is_a_replay(api: Api) -> None:
    body = pay_body(api, metadata={"a": "1", "b": "2"})
    key = uuid.uuid4().hex
    created = api.ok(pay(api, body, key), 202)
    reordered = dict(reversed(list(body.items())))
    reordered["metadata"] = {"b": "2", "a": "1"}
    text = "  " + str(reordered).replace("'", '"') + "\n"
    again = api.client.post("/pay", data=text, content_type="application/json",
                            headers={"Authorization": f"Bearer {api.test_key}",
                                     "Idempotency-Key": key})
    assert again.status_code == 202
    assert again.get_json() == created
    assert again.headers["Idempotent-Replayed"] == "true"


def test_the_same_key_with_another_body_is_422(api: Api, container: Container) -> None:
    body = pay_body(api)
    key = uuid.uuid4().hex
    api.ok(pay(api, body, key), 202)
    before = rows(container, api.tenant_id)
    for changed in ({**body, "amount": 2000}, {**body, "metadata": {"x": "y"}},
                    {**body, "description": "other"}):
        assert_problem(pay(api, changed, key), 422, "idempotency_key_reuse")
    other_endpoint = api.post("/customers", {"name": "Ada"}, headers={"Idempotency-Key": key})
    assert_problem(other_endpoint, 422, "idempotency_key_reuse")
    assert rows(container, api.tenant_id) == before


def test_pay_requires_a_key(api: Api, container: Container) -> None:
    body = pay_body(api)
    before = rows(container, api.tenant_id)
    assert_problem(api.post("/pay", body), 400, "idempotency_key_required")
    assert rows(container, api.tenant_id) == before


def test_keys_belong_to_one_tenant_and_mode(app: Flask, api: Api, container: Container) -> None:
    other = Api.for_new_tenant(app)
    key = "order-1234"
    mine = api.ok(pay(api, pay_body(api), key), 202)
    theirs = other.ok(pay(other, pay_body(other), key), 202)
    assert mine["id"] != theirs["id"]
    assert rows(container, api.tenant_id).payments == 1
    assert rows(container, other.tenant_id).payments == 1

    other_key = {"Idempotency-Key": "customer-1234"}
    test_customer = api.ok(api.post("/customers", {"name": "T"}, headers=other_key), 201)
    live = api.post("/customers", {"name": "T"}, headers=other_key, key=api.live_key)
    live_customer = api.ok(live, 201)
    assert "Idempotent-Replayed" not in live.headers
    assert live_customer["livemode"] is True
    assert test_customer["id"] != live_customer["id"]


def test_keys_work_the_same_on_other_posts(api: Api, container: Container) -> None:
    key = uuid.uuid4().hex
    body = {"name": "Ada", "email": "ada@example.com", "metadata": {"k": "v"}}
    first = api.post("/customers", body, headers={"Idempotency-Key": key})
    created = api.ok(first, 201)
    after_first = rows(container, api.tenant_id)
    again = api.post("/customers", body, headers={"Idempotency-Key": key})
    assert (again.status_code, again.get_json()) == (201, created)
    assert again.headers["Idempotent-Replayed"] == "true"
    changed = api.post("/customers", {**body, "name": "Bob"}, headers={"Idempotency-Key": key})
    assert_problem(changed, 422, "idempotency_key_reuse")
    assert rows(container, api.tenant_id) == after_first

    method_key = uuid.uuid4().hex
    path = f"/customers/{created['id']}/payment-methods"
    method_body = {"provider": "sandbox", "token": "tok_ok"}
    method = api.ok(api.post(path, method_body, headers={"Idempotency-Key": method_key}), 201)
    replay = api.post(path, method_body, headers={"Idempotency-Key": method_key})
    assert (replay.status_code, replay.get_json()) == (201, method)
    assert rows(container, api.tenant_id).payment_methods == 1


def test_a_refused_request_does_not_use_up_its_key(api: Api) -> None:
    """Only successes are stored: a request that failed wrote nothing and may be sent again."""
    body = pay_body(api)
    key = uuid.uuid4().hex
    assert_problem(pay(api, {**body, "amount": 0}, key), 422, "validation_failed")
    assert_problem(pay(api, {**body, "customer_id": "cus_missing"}, key), 404)
    created = api.ok(pay(api, body, key), 202)
    assert pay(api, body, key).get_json() == created


def test_sixteen_simultaneous_duplicates_make_one_payment_and_one_charge(
    app: Flask, api: Api, container: Container, worker: object
) -> None:
    body = pay_body(api, amount=4242)
    key = uuid.uuid4().hex
    start = threading.Barrier(16)
    answers: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def send() -> None:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {api.test_key}", "Idempotency-Key": key}
        start.wait()
        response = client.post("/pay", json=body, headers=headers)
        with lock:
            answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=send) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 16
    accepted = [answer for status, answer in answers if status == 202]
    in_flight = [answer for status, answer in answers if status == 409]
    assert len(accepted) + len(in_flight) == 16, answers
    assert accepted and all(a == accepted[0] for a in accepted)
    assert all(a["code"] == "idempotency_key_in_use" for a in in_flight)
    assert rows(container, api.tenant_id).payments == 1

    payment = api.settled(accepted[0]["id"])
    assert payment["status"] == "succeeded"
    charges = eventually(
        lambda: api.ok(api.get(f"/sandbox/charges?payment_id={payment['id']}"), 200)["data"],
        what="the sandbox charge",
    )
    assert len(charges) == 1
    assert charges[0]["amount"] == 4242
    assert len(api.ok(api.get("/sandbox/charges"), 200)["data"]) == 1


def _age_key(container: Container, tenant_id: str, key: str, hours: float) -> None:
    with container.uow() as uow:
        uow.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
            .values(created_at=utcnow() - timedelta(hours=hours))
        )
        uow.commit()


def test_keys_are_kept_at_least_24_hours(api: Api, container: Container) -> None:
    """The scheduler's prune job keeps a key 23 hours old and drops one 25 hours old."""
    assert container.config.idempotency_ttl_hours >= 24
    body = pay_body(api)
    key = uuid.uuid4().hex
    created = api.ok(pay(api, body, key), 202)
    _age_key(container, api.tenant_id, key, hours=23)
    prune_job(container)
    assert pay(api, body, key).get_json() == created
    assert_problem(pay(api, {**body, "amount": 1}, key), 422, "idempotency_key_reuse")

    _age_key(container, api.tenant_id, key, hours=25)
    prune_job(container)
    fresh = api.ok(pay(api, {**body, "amount": 1}, key), 202)
    assert fresh["id"] != created["id"]


def test_a_response_committed_just_before_the_lock_is_granted_is_replayed(
    api: Api, container: Container
) -> None:
    """The second request's statement starts (and takes its snapshot) while the first still
    holds the key; the first stores its response and commits; only then is the lock granted
    to the second: it must read that response (idempotency_claim reads with a snapshot taken
    after the lock), not find none and do the work again."""
    scope, key = Scope(api.tenant_id, False), uuid.uuid4().hex
    with container.uow() as first, container.engine.connect() as second, \
            container.engine.connect() as holder, ThreadPoolExecutor(1) as pool:
        assert idempotency.claim(first.session, scope, key) == idempotency.Claim(True, None)
        idempotency.store(first, scope, key, fingerprint="f", status=202, body={"id": "x"},
                          headers={})
        # A third session's lock on the tenant's row holds the second request's statement
        # after its snapshot and before its claim (whose argument is that row). Not the
        # first's own: at commit PostgreSQL releases row locks before advisory ones, so the
        # second could try the key's lock in between and find it still held.
        holder.execute(text("SELECT id FROM tenants WHERE id = :id FOR NO KEY UPDATE"),
                       {"id": api.tenant_id})  # the first's key (a foreign key) still goes in
        claiming = pool.submit(lambda: second.exec_driver_sql(
            "SELECT c.claimed, c.request_hash FROM (SELECT id FROM tenants WHERE id = %s"
            " FOR UPDATE) t, LATERAL idempotency_claim(t.id, false, %s) c",
            (api.tenant_id, key)).one())
        eventually(lambda: lock_waits(container.engine, "%idempotency_claim%"),
                   what="the second request waiting")
        first.commit()
        holder.rollback()  # the second's lock is granted only after the first committed
        assert tuple(claiming.result(timeout=30)) == (True, "f")
        second.rollback()
