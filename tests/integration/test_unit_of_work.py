"""The unit of work sends what a transaction enqueued only after that transaction commits,
and writes the objects it was given to insert with that commit, or not at all."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app import render
from app.bootstrap import Container
from app.events import outbox
from app.ids import new_id
from app.models import AttemptStatus, OutboxEvent, Payment, PaymentAttempt
from app.models.uow import UnitOfWork
from app.services.payments import pending_payment
from tests.support import Api


class Sent:
    """A sender that records what it was given, in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, actor_name: str, *args: Any, delay_ms: int | None = None) -> None:
        self.messages.append((actor_name, args))


def test_enqueued_messages_leave_after_commit_in_order(container: Container) -> None:
    sent = Sent()
    with UnitOfWork(container.session_factory, sent) as uow:
        uow.enqueue("charge_payment", "pay_1")
        uow.enqueue("process_subscriptions", ["sub_1", "sub_2"])
        assert sent.messages == [], "nothing leaves before the commit"
        uow.commit()
        assert sent.messages == [("charge_payment", ("pay_1",)),
                                 ("process_subscriptions", (["sub_1", "sub_2"],))]
        uow.commit()
    assert len(sent.messages) == 2, "a message is sent by the commit that made it, once"


def test_a_rolled_back_transaction_sends_nothing(container: Container) -> None:
    sent = Sent()
    with UnitOfWork(container.session_factory, sent) as uow:
        uow.enqueue("charge_payment", "pay_1")
    with UnitOfWork(container.session_factory, sent) as uow:
        uow.enqueue("charge_payment", "pay_2")
        uow.rollback()
        uow.commit()
    assert sent.messages == []


def test_inserted_objects_are_written_by_the_commit_with_their_events_or_not_at_all(
    api: Api, container: Container
) -> None:
    customer = api.customer()
    method = api.payment_method(customer["id"])

    def record(commit: bool, **fields: Any) -> Payment:
        with container.uow() as uow:
            payment = pending_payment(
                tenant_id=api.tenant_id, livemode=False, customer_id=customer["id"],
                payment_method_id=method["id"], amount=1200, currency="eur", **fields)
            uow.insert(payment)
            outbox.record_payment(uow.session, "payment.created", payment)
            outbox.record_payment(uow.session, "payment.created", payment)  # two rows, in order
            if commit:
                uow.commit()
        return payment

    dropped = record(False)
    kept = record(True, description="kept", metadata={"k": "v"})
    with container.session_factory() as session:
        found = {p.id: render.payment(p) for p in session.scalars(
            select(Payment).where(Payment.id.in_([dropped.id, kept.id])))}
        events = session.execute(select(OutboxEvent.key, OutboxEvent.payload).where(
            OutboxEvent.key.in_([dropped.id, kept.id])).order_by(OutboxEvent.id)).all()
    assert found == {kept.id: render.payment(kept)}
    assert [(key, payload["data"]["object"]) for key, payload in events] == [
        (kept.id, found[kept.id])] * 2
    assert events[0].payload["id"] != events[1].payload["id"]


def test_many_inserted_objects_go_in_by_table_payments_before_their_attempts(
    api: Api, container: Container
) -> None:
    """A renewal round's shape: several payments, an attempt each (not all with the same
    columns set) and their events, in batches at the commit, or not at all."""
    customer = api.customer()
    method = api.payment_method(customer["id"])

    def record(commit: bool) -> list[Payment]:
        with container.uow() as uow:
            payments = [pending_payment(
                tenant_id=api.tenant_id, livemode=False, customer_id=customer["id"],
                payment_method_id=method["id"], amount=100 + n, currency="eur",
                metadata={"note": f"n\u00b0 {n} \u2713", "quote": '"\\'},
                **({"description": "odd"} if n % 2 else {})) for n in range(3)]
            for payment in payments:
                uow.insert(payment)
                outbox.record_payment(uow.session, "payment.created", payment)
            for payment in payments:
                uow.insert(PaymentAttempt(
                    id=new_id("att"), payment_id=payment.id, number=1,
                    status=AttemptStatus.PROCESSING, provider="sandbox",
                    idempotency_key=f"{payment.id}:1",
                    **({"provider_reference": f"ref {payment.amount}"}
                       if payment.amount % 2 else {})))
            if commit:
                uow.commit()
        return payments

    dropped, kept = record(False), record(True)
    ids = [p.id for p in dropped + kept]
    with container.session_factory() as session:
        found = {p.id: (shown(p), p.created_at,
                        [(a.number, a.provider_reference) for a in p.attempts])
                 for p in session.scalars(select(Payment).where(Payment.id.in_(ids)))}
        events = session.execute(select(OutboxEvent.key, OutboxEvent.payload).where(
            OutboxEvent.key.in_(ids)).order_by(OutboxEvent.id)).all()
    # Every value as it was given: text, JSON, timestamps to the microsecond.
    assert found == {p.id: (shown(p), p.created_at, [
        (1, f"ref {p.amount}" if p.amount % 2 else None)]) for p in kept}
    assert [(key, payload["data"]["object"]) for key, payload in events] == [
        (p.id, render.payment(p)) for p in kept]


def shown(payment: Payment) -> dict[str, Any]:
    """The payment as the API shows it, but its attempts."""
    return {k: v for k, v in render.payment(payment).items() if k != "attempts"}
