"""One-time payments are claimed, charged and settled in batches across messages.

A `charge_payment` message claims its own payment and other fresh pending one-time payments
of any tenant in one claim (one lease), charges them together and settles them together;
their own messages then find nothing to do. Each payment is charged exactly once, and a
mate that failed transiently is retried by a message of its own.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, event, select, text, update

from app.bootstrap import Container
from app.clock import utcnow
from app.config import Config
from app.models import AttemptStatus, Payment, PaymentAttempt, PaymentStatus
from app.models.database import drop_database, ensure_database, migrate
from app.services import charge, payments
from tests.conftest import start_worker
from tests.support import Api, eventually, lock_waits, outbox

MATES = charge.Mates(count=1000, fresh_seconds=30)


@pytest.fixture(scope="module")
def quiet_config(config: Config) -> Iterator[Config]:
    """A database and a broker namespace of this module's own: no worker claims its payments
    unless the test starts one. A namespace alone keeps only its messages from other
    workers: any claim takes fresh pending payments of every tenant in its database as
    mates, so the session's worker (started by an earlier module, test_idempotency's), taking
    a late message of its own, would take these too. Payments stay fresh (batchable) longer
    than the session's 1 s."""
    own = dataclasses.replace(config, database_url=f"{config.database_url}_batch",
                              redis_namespace=f"{config.redis_namespace}-batch",
                              reconcile_stale_seconds=MATES.fresh_seconds)
    drop_database(own.database_url)
    ensure_database(own.database_url)
    try:
        migrate(own.database_url)
        yield own
    finally:
        drop_database(own.database_url)


@pytest.fixture(scope="module")
def quiet_app(quiet_config: Config) -> Flask:
    from app.api import create_app

    return create_app(quiet_config)


def ledger(api: Api, payment_id: str) -> int:
    """How many charges the sandbox made for one payment."""
    return len(api.ok(api.get(f"/sandbox/charges?payment_id={payment_id}"), 200)["data"])


def set_livemode(c: Container, payment_id: str, livemode: bool) -> None:
    with c.uow() as uow:
        uow.session.execute(update(Payment).where(Payment.id == payment_id)
                            .values(livemode=livemode))
        uow.commit()


def test_one_claim_takes_fresh_pending_payments_of_every_tenant_and_charges_each_once(
    quiet_app: Flask,
) -> None:
    c: Container = quiet_app.extensions["container"]
    tenants = [Api.for_new_tenant(quiet_app) for _ in range(2)]
    made = [(api, api.pay()["id"]) for api in tenants for _ in range(3)]
    ids = [payment_id for _, payment_id in made]

    live = tenants[0].pay()["id"]
    set_livemode(c, live, True)  # as a live payment would be: not taken along with test ones

    claims = charge.claim(c.uow, ids[:1], c.config.payment_lease_seconds, MATES)
    claimed = {claim.request.payment_id for claim in claims}
    assert set(ids) <= claimed, "one claim took every fresh pending payment"
    assert live not in claimed
    assert len({claim.lease for claim in claims}) == 1
    outcomes = charge.charge_claimed(c.uow, c.providers, claims)
    assert not [o for o in outcomes if o.payment_id in ids]

    set_livemode(c, live, False)  # its own message charges it
    made.append((tenants[0], live))
    for _, payment_id in made:  # each one's own message, later: nothing else to do
        assert charge.charge_payments(c.uow, c.providers, [payment_id], mates=MATES,
                                      lease_seconds=c.config.payment_lease_seconds) == []
    for api, payment_id in made:
        payment = api.ok(api.get(f"/payments/{payment_id}"), 200)
        assert payment["status"] == "succeeded"
        assert [a["number"] for a in payment["attempts"]] == [1]
        assert ledger(api, payment_id) == 1


def test_a_mate_that_fails_transiently_is_left_for_a_retry_of_its_own(quiet_app: Flask) -> None:
    c: Container = quiet_app.extensions["container"]
    api = Api.for_new_tenant(quiet_app)
    first, flaky = api.pay()["id"], api.pay("tok_error")["id"]

    retry = charge.charge_payments(c.uow, c.providers, [first], mates=MATES,
                                   lease_seconds=c.config.payment_lease_seconds)
    assert [o.payment_id for o in retry if o.payment_id in (first, flaky)] == [flaky]
    assert api.ok(api.get(f"/payments/{first}"), 200)["status"] == "succeeded"
    payment = api.ok(api.get(f"/payments/{flaky}"), 200)
    assert payment["status"] == "processing"  # nothing charged; its retry makes attempt 2
    assert [a["status"] for a in payment["attempts"]] == ["failed"]
    assert ledger(api, flaky) == 0


@pytest.fixture()
def quiet_worker(quiet_config: Config) -> Iterator[subprocess.Popen[bytes]]:
    process = start_worker(quiet_config)
    yield process
    process.terminate()
    process.wait(timeout=30)


def test_the_worker_charges_queued_payments_in_one_batch(
    quiet_app: Flask, request: pytest.FixtureRequest
) -> None:
    api = Api.for_new_tenant(quiet_app)
    ok = [api.pay()["id"] for _ in range(6)]
    flaky = api.pay("tok_error")["id"]  # retried by messages of its own, then given up

    request.getfixturevalue("quiet_worker")  # their messages wait in the queue until now
    settled: list[dict[str, Any]] = [api.settled(payment_id, 30) for payment_id in ok]
    assert {p["status"] for p in settled} == {"succeeded"}
    assert all(ledger(api, payment_id) == 1 for payment_id in ok)
    with quiet_app.extensions["container"].session_factory() as session:
        claimed_at = set(session.scalars(  # an attempt is made when its payment is claimed
            select(PaymentAttempt.created_at).where(PaymentAttempt.payment_id.in_(ok))))
    assert len(claimed_at) < len(ok), "some were claimed together"
    given_up = api.settled(flaky, 30)
    assert (given_up["status"], given_up["failure_code"]) == ("failed", "provider_unavailable")
    assert ledger(api, flaky) == 0


def test_a_young_message_lingers_so_payments_made_meanwhile_ride_in_its_batch(
    quiet_app: Flask, quiet_config: Config
) -> None:
    api = Api.for_new_tenant(quiet_app)
    c: Container = quiet_app.extensions["container"]
    worker = start_worker(dataclasses.replace(quiet_config, charge_linger_ms=2000))
    try:
        first = api.settled(api.pay()["id"], 30)  # the worker is up and idle
        bystander = add_pending_without_message(c, first["id"])
        # each message is taken at once (while a thread is free: one waits in the window)
        ids = [api.pay()["id"] for _ in range(3)]
        assert {api.settled(payment_id, 30)["status"] for payment_id in ids} == {"succeeded"}
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    with c.session_factory() as session:
        claimed_at = set(session.scalars(
            select(PaymentAttempt.created_at).where(PaymentAttempt.payment_id.in_(ids))))
        left_alone = session.get_one(Payment, bystander).status is PaymentStatus.PENDING
        if left_alone:  # gone, so that no later claim of this module takes it as a mate
            session.execute(delete(Payment).where(Payment.id == bystander))
            session.commit()
    assert left_alone, "a window's claim takes no mates"
    assert len(claimed_at) == 1, "the first message waited for the others: one claim"


def add_pending_without_message(c: Container, like: str) -> str:
    """A fresh pending one-time payment like this one, with no message of its own."""
    with c.session_factory() as session:
        model = session.get_one(Payment, like)
        payment = payments.pending_payment(
            tenant_id=model.tenant_id, livemode=model.livemode, customer_id=model.customer_id,
            payment_method_id=model.payment_method_id, amount=model.amount,
            currency=model.currency)
        session.add(payment)
        session.commit()
        return payment.id


def test_a_claim_takes_no_more_mates_than_its_count(quiet_app: Flask) -> None:
    c: Container = quiet_app.extensions["container"]
    api = Api.for_new_tenant(quiet_app, rate_limit="10000/second")
    ids = [api.pay()["id"] for _ in range(40)]

    claims = charge.claim(c.uow, ids[:1], c.config.payment_lease_seconds,
                           charge.Mates(count=3, fresh_seconds=MATES.fresh_seconds))
    assert len(claims) == 4
    assert charge.charge_claimed(c.uow, c.providers, claims) == []
    for payment_id in ids:  # the rest, by their own messages
        charge.charge_payments(c.uow, c.providers, [payment_id], mates=MATES,
                               lease_seconds=c.config.payment_lease_seconds)
    assert all(ledger(api, payment_id) == 1 for payment_id in ids)


def test_a_claim_takes_mates_only_once_it_holds_its_named_payment(quiet_app: Flask) -> None:
    """While it waits for its own payment (held by another transaction) it holds no mate: two
    claims never wait for each other in a cycle."""
    c: Container = quiet_app.extensions["container"]
    api = Api.for_new_tenant(quiet_app)
    named, mate = api.pay()["id"], api.pay()["id"]
    with c.engine.connect() as holder, ThreadPoolExecutor(1) as pool:
        holder.execute(select(Payment.id).where(Payment.id == named).with_for_update())
        claiming = pool.submit(charge.claim, c.uow, [named], c.config.payment_lease_seconds,
                               MATES)
        eventually(lambda: lock_waits(c.engine, "EXECUTE charge_claim%"),
                   what="the claim waiting for its named payment")
        with c.engine.connect() as probe:
            assert probe.scalar(select(Payment.id).where(Payment.id == mate)
                                .with_for_update(skip_locked=True)) == mate, "mate untouched"
            probe.rollback()
        holder.rollback()
        claimed = {claim.request.payment_id for claim in claiming.result(timeout=30)}
    assert {named, mate} <= claimed


def test_a_slow_charge_holds_only_its_window_s_first_thread(
    quiet_app: Flask, quiet_config: Config
) -> None:
    """The others of a window are done once its claim is made: a payment that comes after the
    window settles on a thread the window left free while the window's slow charge
    (tok_slow_5, answered 5 s after it is made) is still in flight."""
    api = Api.for_new_tenant(quiet_app)
    worker = start_worker(dataclasses.replace(quiet_config, charge_linger_ms=500), threads=2)
    try:
        api.settled(api.pay()["id"], 30)  # the worker is up and idle
        slow, fast = api.pay("tok_slow_5")["id"], api.pay()["id"]  # one window, both threads
        eventually(lambda: api.ok(api.get(f"/payments/{slow}"), 200)["status"] == "processing",
                   what="the window's claim")
        later = api.pay()["id"]
        assert api.settled(later, 30)["status"] == "succeeded"
        assert api.ok(api.get(f"/payments/{slow}"), 200)["status"] == "processing"
        assert {api.settled(p, 30)["status"] for p in (slow, fast)} == {"succeeded"}
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert [ledger(api, p) for p in (slow, fast, later)] == [1, 1, 1]


@pytest.mark.parametrize("plans", ["force_generic_plan", "force_custom_plan"])
def test_a_claim_finds_its_payments_by_primary_key_alone(quiet_app: Flask, plans: str) -> None:
    """Its UPDATEs never AND the key lookup with a scan of ix_payments_unsettled, which
    holds every unsettled row version since the last vacuum (bench/pay.py: 32,494 entries
    read by each claim, most of PostgreSQL's time under load)."""
    c: Container = quiet_app.extensions["container"]
    api = Api.for_new_tenant(quiet_app)
    ids = [api.pay()["id"], api.pay()["id"]]
    prepared = charge._claiming()
    values = {"ids": ids, "now": utcnow(), "owner": "explain", "until": utcnow(),
              "count": 3, "fresh": utcnow(), "attempt_stem": "att_explain"}
    with c.engine.connect() as setup:
        # A table of settled payments, each once pending: as after a busy minute.
        others = [column.name for column in Payment.__table__.columns if column.name != "id"]
        copies = text(f"INSERT INTO payments (id, {', '.join(others)})"  # noqa: S608
                      f" SELECT 'pay_explain' || n, {', '.join(others)}"
                      " FROM payments, generate_series(1, 5000) n WHERE id = :id")
        setup.execute(copies, {"id": ids[0]})
        setup.execute(text("UPDATE payments SET status = 'succeeded'"
                           " WHERE id LIKE 'pay_explain%'"))
        setup.commit()
        setup.exec_driver_sql("ANALYZE payments")
        setup.commit()
    try:
        with c.engine.connect() as connection:
            try:
                connection.exec_driver_sql(f"SET LOCAL plan_cache_mode = {plans}")
                # under a name of its own: this pooled connection may hold the claim prepared
                connection.exec_driver_sql(
                    prepared._prepare.replace(prepared.name, "explained", 1))
                plan = connection.exec_driver_sql(
                    "EXPLAIN (FORMAT JSON) "
                    + prepared._execute.replace(prepared.name, "explained", 1),
                    prepared.bound(values)).scalar_one()
            finally:
                connection.invalidate()  # closed: not back to the pool with `explained`
    finally:
        with c.engine.connect() as cleanup:
            cleanup.execute(text("DELETE FROM payments WHERE id LIKE 'pay_explain%'"))
            cleanup.commit()
    scans: dict[str, set[str]] = {}

    def walk(node: dict[str, Any], cte: str) -> None:
        cte = node.get("Subplan Name", cte).removeprefix("CTE ")
        scans.setdefault(cte, set()).add(node.get("Index Name", node["Node Type"]))
        for child in node.get("Plans", []):
            walk(child, cte)

    walk(plan[0]["Plan"], "")
    for cte in ("named", "mates"):
        assert "ix_payments_unsettled" not in scans[cte], (cte, scans[cte])
        assert "pk_payments" in scans[cte], (cte, scans[cte])


@contextmanager
def statements(c: Container) -> Iterator[list[str]]:
    """Every statement the container's engine sends while the block runs, as sent."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(c.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(c.engine, "before_cursor_execute", record)


def test_one_time_payments_settle_in_one_statement_with_the_events_the_api_shows(
    quiet_app: Flask,
) -> None:
    """Their settle locks, records and returns them in one statement (no ORM read of the
    payments), and each event carries the payment exactly as GET /payments/{id} shows it."""
    c: Container = quiet_app.extensions["container"]
    api = Api.for_new_tenant(quiet_app)
    ids = [api.pay(token)["id"] for token in ("tok_ok", "tok_decline", "tok_action")]
    claims = charge.claim(c.uow, ids, c.config.payment_lease_seconds)
    assert len(claims) == 3
    with statements(c) as sent:
        assert charge.charge_claimed(c.uow, c.providers, claims) == []
    assert len([s for s in sent if s.startswith("EXECUTE charge_settle")]) == 1
    assert not [s for s in sent if s.startswith("SELECT") and "FOR UPDATE" in s], sent
    for payment_id, status in zip(ids, ("succeeded", "failed", "requires_action"), strict=True):
        shown = api.ok(api.get(f"/payments/{payment_id}"), 200)
        assert shown["status"] == status
        created, settled = outbox(c, payment_id)
        assert (created["type"], settled["type"]) == ("payment.created", f"payment.{status}")
        assert settled["data"]["object"] == shown
    assert [ledger(api, payment_id) for payment_id in ids] == [1, 0, 0]


def test_an_outcome_the_statement_does_not_expect_is_settled_by_the_rules_in_its_batch(
    quiet_app: Flask,
) -> None:
    """A success for a payment recorded failed (money moved after all) goes through the
    ORM's rules in the same transaction as the batch's plain outcome; answers that tell
    nothing new change nothing and record no event."""
    c: Container = quiet_app.extensions["container"]
    api = Api.for_new_tenant(quiet_app)
    late, plain = api.pay()["id"], api.pay()["id"]
    claims = {claim.request.payment_id: claim
              for claim in charge.claim(c.uow, [late, plain], c.config.payment_lease_seconds)}
    declined = charge.Outcome(claims[late], AttemptStatus.FAILED,
                              failure=("card_declined", "The card was declined."))
    charge.settle(c.uow, [declined])
    assert api.ok(api.get(f"/payments/{late}"), 200)["status"] == "failed"

    outcomes = [charge.Outcome(claims[late], AttemptStatus.SUCCEEDED, reference="ch_late"),
                charge.Outcome(claims[plain], AttemptStatus.SUCCEEDED, reference="ch_plain")]
    charge.settle(c.uow, outcomes)
    charge.settle(c.uow, [*outcomes, declined])  # nothing new
    for payment_id, types in ((late, ["created", "failed", "succeeded"]),
                              (plain, ["created", "succeeded"])):
        shown = api.ok(api.get(f"/payments/{payment_id}"), 200)
        assert shown["status"] == "succeeded"
        assert [a["status"] for a in shown["attempts"]] == ["succeeded"]
        events = outbox(c, payment_id)
        assert [e["type"] for e in events] == [f"payment.{t}" for t in types]
        assert events[-1]["data"]["object"] == shown
    with c.session_factory() as session:
        assert set(session.scalars(select(PaymentAttempt.provider_reference).where(
            PaymentAttempt.payment_id.in_([late, plain])))) == {"ch_late", "ch_plain"}
