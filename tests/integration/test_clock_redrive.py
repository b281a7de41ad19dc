"""A test clock whose advance message was lost (a Redis restart, a killed worker) is driven
again by the scheduler within seconds, and never by two workers or two messages at once.

Found by bench/faults.py: after a worker kill and a Redis restart the clock stayed
`advancing` for good, and none of its renewals ran; later, that each lost message cost
RECONCILE_STALE_SECONDS (30 s) before it was sent again, minutes under repeated faults.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Collection
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from app.bootstrap import Container
from app.models import ClockStatus, Payment, PaymentStatus, Provider, TestClock
from app.models.uow import UnitOfWork
from app.scheduler.runner import CLOCK_LOOK_SECONDS, clock_job
from app.services import clocks, customers, plans, subscriptions
from app.services.clocks import advance
from app.services.scope import Scope
from app.services.tenants import create_tenant
from tests.support import eventually

START = datetime(2024, 1, 31, tzinfo=UTC)


def _advancing_clock(container: Container) -> str:
    """A clock moved forward whose `advance_test_clock` message never reached a worker."""
    lost: list[Any] = []
    with container.uow() as uow:
        scope = Scope(create_tenant(uow, f"redrive-{uuid.uuid4().hex[:8]}").tenant_id, False)
        uow.commit()
    with container.uow() as uow:
        clock_id = clocks.create_clock(uow, scope, START).id
        uow.commit()
    with UnitOfWork(container.session_factory, lambda *a, **k: lost.append(a)) as uow:
        clocks.start_advance(uow, scope, clock_id, START + timedelta(days=40))
        uow.commit()
    with container.uow() as uow:  # as if the scheduler's look were due since
        uow.session.execute(update(TestClock).where(TestClock.id == clock_id)
                            .values(updated_at=TestClock.updated_at - timedelta(hours=1)))
        uow.commit()
    assert lost == [("advance_test_clock", clock_id, 0, 1)]
    return clock_id


def _drive(
    container: Container, clock_id: str, *, slots: int = 1, generation: int | None = None
) -> AbstractContextManager[clocks.Drive]:
    return clocks.driving(container.engine, clock_id, tenant_slots=slots, generation=generation)


def _redriven(
    container: Container, clock_id: str, held: Collection[clocks.Held] = ()
) -> list[tuple[Any, ...]]:
    """The advance messages the scheduler's look sends for `clock_id` when the broker holds
    `held` (other tests' clocks may be due for a look too)."""
    sent: list[tuple[Any, ...]] = []
    with UnitOfWork(container.session_factory, lambda *a, **k: sent.append(a)) as uow:
        clocks.redrive_stalled(uow, lambda: held, stale_seconds=CLOCK_LOOK_SECONDS,
                               batch=10_000)
        uow.commit()
    return [message for message in sent if message[1] == clock_id]


def _generation(container: Container, clock_id: str) -> int:
    with container.session_factory() as session:
        return session.get_one(TestClock, clock_id).generation


def _backdate(container: Container, clock_id: str, seconds: float) -> None:
    with container.uow() as uow:
        uow.session.execute(update(TestClock).where(TestClock.id == clock_id).values(
            updated_at=TestClock.updated_at - timedelta(seconds=seconds)))
        uow.commit()


def _status(container: Container, clock_id: str) -> ClockStatus:
    with container.session_factory() as session:
        return session.get_one(TestClock, clock_id).status


def test_a_clock_whose_advance_message_was_lost_is_advanced_by_the_scheduler(
    container: Container, worker: subprocess.Popen[bytes]
) -> None:
    clock_id = _advancing_clock(container)
    clock_job(container)
    eventually(lambda: _status(container, clock_id) is ClockStatus.READY, 30,
               what="the stalled clock to be advanced again")


def test_a_clock_is_driven_by_one_worker_at_a_time(container: Container) -> None:
    clock_id = _advancing_clock(container)
    with _drive(container, clock_id) as first:
        assert first is clocks.Drive.MINE
        with _drive(container, clock_id) as second:
            assert second is clocks.Drive.TAKEN, "a second driver while the first lives"
    with _drive(container, clock_id) as after:
        assert after is clocks.Drive.MINE, "the lock is free once the first driver is done"


def test_a_tenant_drives_at_most_its_slots_of_clocks_at_once(container: Container) -> None:
    first, second = _advancing_clock(container), _advancing_clock(container)
    with container.session_factory() as session:  # the second clock of the first's tenant
        tenant_id = session.get_one(TestClock, first).tenant_id
        session.execute(update(TestClock).where(TestClock.id == second)
                        .values(tenant_id=tenant_id))
        session.commit()
    with _drive(container, first) as one:
        assert one is clocks.Drive.MINE
        with _drive(container, second) as other:
            assert other is clocks.Drive.TENANT_BUSY
        with _drive(container, second, slots=2) as other:
            assert other is clocks.Drive.MINE
    with _drive(container, second) as after:
        assert after is clocks.Drive.MINE, "the slot is free once the first clock is done"


def test_an_advance_waiting_for_its_retry_is_not_driven_again(container: Container) -> None:
    """An advance stopped by a payment another worker is charging (ClockWaiting) is run
    again by a message of its own; the scheduler must not start a second driver meanwhile, whose
    own retries (and a fresh advance after they run out) would charge the clock's payments
    beside the first's, each stopped advance adding one more (20 attempts for a payment whose
    policy allows 6, measured)."""
    sent: list[Any] = []

    def unsent() -> UnitOfWork:
        return UnitOfWork(container.session_factory, lambda *a, **k: sent.append(a))

    def do(action: Any) -> Any:
        with unsent() as uow:
            done = action(uow)
            uow.commit()
            return done

    scope = Scope(do(lambda u: create_tenant(u, f"redrive-{uuid.uuid4().hex[:8]}")).tenant_id,
                  False)
    clock_id = do(lambda u: clocks.create_clock(u, scope, START)).id
    customer = do(lambda u: customers.create_customer(u, scope, email=None, name=None,
                                                      metadata={}, test_clock_id=clock_id))
    method = do(lambda u: customers.attach_payment_method(
        u, container.providers, scope, customer.id, provider=Provider.SANDBOX, token="tok_ok"))
    plan = do(lambda u: plans.create_plan(u, scope, code="monthly", name="Monthly", amount=1000,
                                          currency="usd", interval="month", interval_count=1,
                                          trial_days=0))
    sub = do(lambda u: subscriptions.create_subscription(
        u, scope, customer_id=customer.id, plan_id=plan.id, payment_method_id=method.id,
        trial_days=None, metadata={}))
    do(lambda u: clocks.start_advance(u, scope, clock_id, START + timedelta(days=40)))
    with container.uow() as uow:  # its first payment is being charged by another worker
        uow.session.execute(update(Payment).where(Payment.subscription_id == sub.id).values(
            status=PaymentStatus.PROCESSING, lease_owner="elsewhere",
            lease_until=datetime.now(UTC) + timedelta(hours=1)))
        uow.session.execute(update(TestClock).where(TestClock.id == clock_id)  # long advancing
                            .values(updated_at=TestClock.updated_at - timedelta(hours=1)))
        uow.commit()
    with pytest.raises(advance.ClockWaiting):
        advance.advance_clock(unsent, container.providers, clock_id, lease_seconds=60)
    # the actor's next look: a delayed message of the same generation, which the broker holds
    assert _redriven(container, clock_id, held={(clock_id, 1)}) == []


def test_an_advance_the_broker_holds_is_left_alone_however_long_it_waits(
    container: Container, worker: subprocess.Popen[bytes]
) -> None:
    """Held: ready behind a long queue, delayed (a retry, the advance's next look), fetched
    by a worker that is busy, or the message that sends it again once its retries ran out;
    a replacement would void it, and its retries would start from nothing. Lost with Redis
    (restarted empty), it is replaced, and the clock advances."""
    clock_id = _advancing_clock(container)  # its message lost, its look due an hour ago
    container.enqueue("advance_test_clock", clock_id, 2, 1, delay_ms=3_600_000)
    clock_job(container)
    assert _generation(container, clock_id) == 1, "its next look is held: not replaced"

    namespace = container.broker.namespace
    container.redis.delete(*(f"{namespace}:clocks{suffix}"  # Redis restarted, empty
                             for suffix in ("", ".msgs", ".DQ", ".DQ.msgs")))
    _backdate(container, clock_id, CLOCK_LOOK_SECONDS + 1)
    clock_job(container)
    assert _generation(container, clock_id) == 2, "lost: replaced"
    eventually(lambda: _status(container, clock_id) is ClockStatus.READY, 30,
               what="the replacement to advance the clock")


def test_which_messages_stand_for_a_clocks_advance() -> None:
    assert clocks.held_advance("advance_test_clock", ["clock_a", 2, 7]) == ("clock_a", 7)
    assert clocks.held_advance("advance_test_clock", ["clock_a"]) == ("clock_a", None)
    exhausted = [{"actor_name": "advance_test_clock", "args": ["clock_b", 0, 3]},
                 {"retries": 5, "max_retries": 5}]
    assert clocks.held_advance("clock_retries_exhausted", exhausted) == ("clock_b", 3)
    assert clocks.held_advance("charge_payment", ["pay_1"]) is None


def test_a_replaced_advance_message_is_void(container: Container) -> None:
    clock_id = _advancing_clock(container)
    assert _redriven(container, clock_id) == [("advance_test_clock", clock_id, 0, 2)]
    with _drive(container, clock_id, generation=1) as lost:
        assert lost is clocks.Drive.VOID, "the message it replaced, should it turn up late"
    with _drive(container, clock_id, generation=2) as new:
        assert new is clocks.Drive.MINE
    with _drive(container, clock_id) as older:
        assert older is clocks.Drive.MINE, "a message sent before generations existed"
    assert _redriven(container, clock_id) == [], "just looked at"


def test_a_clock_being_driven_is_not_sent_again(container: Container) -> None:
    clock_id = _advancing_clock(container)
    with _drive(container, clock_id, generation=1) as drive:
        assert drive is clocks.Drive.MINE
        assert _redriven(container, clock_id) == []
    assert _redriven(container, clock_id) == [], "looked at just now, and found driven"
    _backdate(container, clock_id, CLOCK_LOOK_SECONDS + 1)
    assert _redriven(container, clock_id) == [("advance_test_clock", clock_id, 0, 2)]


def test_a_legacy_message_counts_as_held(container: Container) -> None:
    clock_id = _advancing_clock(container)
    assert _redriven(container, clock_id, held={(clock_id, None)}) == []
    _backdate(container, clock_id, CLOCK_LOOK_SECONDS + 1)
    assert _redriven(container, clock_id, held={(clock_id, 0)}) == [
        ("advance_test_clock", clock_id, 0, 2)], "a message of an older generation is void"
