"""Real-time renewals: two schedulers at once, duplicated messages and racing runs charge once.

Subscriptions are made through the API, then their period is moved into the past straight
in the database, so they are due *now* on the real clock (no test clock involved).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.billing.periods import add_intervals
from app.bootstrap import Container
from app.clock import utcnow
from app.config import Config
from app.models import (
    OutboxEvent,
    Payment,
    PaymentPurpose,
    PaymentStatus,
    Plan,
    SandboxCharge,
    Subscription,
)
from app.services import billing_cycle, renewals
from tests.conftest import child_env
from tests.integration.test_subscriptions import plan, wait_status
from tests.support import Api, eventually

ROOT = Path(__file__).resolve().parents[2]
SUBSCRIPTIONS = 50


def subscribe_many(api: Api, count: int) -> list[str]:
    """`count` active monthly subscriptions of one customer, first periods paid."""
    customer = api.customer()
    method = api.payment_method(customer["id"])
    body = {"customer_id": customer["id"], "plan_id": plan(api)["id"],
            "payment_method_id": method["id"]}
    ids = [str(api.ok(api.post("/subscriptions", body), 201)["id"]) for _ in range(count)]
    for sub_id in ids:
        wait_status(api, sub_id, "active")
    return ids


def make_due(container: Container, sub_ids: list[str]) -> datetime:
    """Move the subscriptions' current period so that it ended a week ago; returns that end."""
    start = utcnow() - timedelta(days=40)
    end = add_intervals(start, "month", 1, 1)
    with container.session_factory() as session:
        session.execute(
            update(Subscription).where(Subscription.id.in_(sub_ids)).values(
                billing_anchor=start, current_period_start=start, current_period_end=end,
                next_event_at=end,
            )
        )
        session.commit()
    return end


def cycle_payments(container: Container, sub_ids: list[str]) -> list[Payment]:
    with container.session_factory() as session:
        return list(session.scalars(
            select(Payment).where(Payment.subscription_id.in_(sub_ids),
                                  Payment.purpose == PaymentPurpose.CYCLE)))


def charge_counts(container: Container, payment_ids: list[str]) -> Counter[str]:
    with container.session_factory() as session:
        rows = session.execute(
            select(SandboxCharge.payment_id, func.count())
            .where(SandboxCharge.payment_id.in_(payment_ids))
            .group_by(SandboxCharge.payment_id))
        return Counter({payment_id: count for payment_id, count in rows})


def renewed_events(container: Container, sub_ids: list[str]) -> Counter[str]:
    with container.session_factory() as session:
        keys = session.scalars(select(OutboxEvent.key).where(
            OutboxEvent.key.in_(sub_ids), OutboxEvent.type == "subscription.renewed"))
        return Counter(keys)


def renewed(container: Container, sub_ids: list[str]) -> bool:
    """Every subscription has its renewal payment and it succeeded."""
    payments = cycle_payments(container, sub_ids)
    done = [p for p in payments if p.status is PaymentStatus.SUCCEEDED]
    return len(done) >= 2 * len(sub_ids)


def assert_renewed_exactly_once(container: Container, sub_ids: list[str], end: datetime) -> None:
    """One renewal payment per subscription for the period starting at `end`, charged once."""
    payments = cycle_payments(container, sub_ids)
    per_period = Counter((p.subscription_id, p.period_start) for p in payments)
    assert set(per_period.values()) == {1}
    renewals_ = [p for p in payments if p.period_start == end]
    assert sorted(str(p.subscription_id) for p in renewals_) == sorted(sub_ids)
    assert len(payments) == 2 * len(sub_ids)
    assert {p.status for p in payments} == {PaymentStatus.SUCCEEDED}
    assert [len(p.attempts) for p in renewals_] == [1] * len(sub_ids)
    counts = charge_counts(container, [p.id for p in payments])
    assert set(counts) == {p.id for p in payments} and set(counts.values()) == {1}
    assert renewed_events(container, sub_ids) == Counter(dict.fromkeys(sub_ids, 1))
    with container.session_factory() as session:
        subs = session.scalars(select(Subscription).where(Subscription.id.in_(sub_ids))).all()
    assert {(s.status.value, s.current_period_start) for s in subs} == {("active", end)}
    assert all(s.next_event_at == s.current_period_end > utcnow() for s in subs)


@pytest.fixture()
def schedulers(config: Config) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two `python -m app.scheduler` processes, as ECS may run them, claiming in small batches
    every 0.2 s so that both are claiming at the same time."""
    env = child_env(config, RENEWAL_INTERVAL_SECONDS="0.2", RENEWAL_BATCH_SIZE="5",
                    RENEWAL_MESSAGE_SIZE="5", SUBSCRIPTION_LEASE_SECONDS="30")
    processes = [subprocess.Popen([sys.executable, "-m", "app.scheduler"], env=env, cwd=ROOT,
                                  start_new_session=True) for _ in range(2)]
    yield processes
    for process in processes:
        process.terminate()
    hung = []
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            hung.append(process.pid)
    assert hung == [], f"schedulers {hung} ignored SIGTERM"


def test_two_schedulers_renew_each_due_subscription_exactly_once(
    api: Api, worker: subprocess.Popen[bytes], container: Container,
    schedulers: list[subprocess.Popen[bytes]],
) -> None:
    sub_ids = subscribe_many(api, SUBSCRIPTIONS)
    end = make_due(container, sub_ids)
    eventually(lambda: renewed(container, sub_ids), 60, what="every subscription to renew")
    assert [p.poll() for p in schedulers] == [None, None], "a scheduler died"
    assert_renewed_exactly_once(container, sub_ids, end)


def _queue_drained(container: Container) -> bool:
    key = f"{container.config.redis_namespace}-dramatiq:default.msgs"
    return int(container.redis.hlen(key)) == 0


def test_duplicated_process_subscription_message_charges_once(
    api: Api, worker: subprocess.Popen[bytes], container: Container
) -> None:
    sub_ids = subscribe_many(api, 3)
    end = make_due(container, sub_ids)
    for _ in range(3):  # each one alone, then all together: every one arrives four times
        for sub_id in sub_ids:
            container.enqueue("process_subscriptions", [sub_id])
    container.enqueue("process_subscriptions", sub_ids)
    eventually(lambda: renewed(container, sub_ids), 30, what="the renewals")
    eventually(lambda: _queue_drained(container), 30, what="every copy to be processed")
    assert_renewed_exactly_once(container, sub_ids, end)


def test_concurrent_run_due_calls_charge_once(
    api: Api, worker: subprocess.Popen[bytes], container: Container
) -> None:
    [sub_id] = subscribe_many(api, 1)
    end = make_due(container, [sub_id])
    threads = 6
    barrier = threading.Barrier(threads)
    done: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            done.append(renewals.run_due(container.uow, container.providers, [sub_id],
                                         utcnow(), lease_seconds=5).steps)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(done) == [0] * (threads - 1) + [1]
    assert_renewed_exactly_once(container, [sub_id], end)


def test_cycle_payment_is_unique_per_subscription_and_period_in_the_database(
    api: Api, worker: subprocess.Popen[bytes], container: Container
) -> None:
    """Even code that skipped the row lock could not bill one period twice."""
    [sub_id] = subscribe_many(api, 1)
    with container.uow() as uow:
        session = uow.session
        sub = session.get_one(Subscription, sub_id)
        first = session.scalar(select(Payment).where(Payment.subscription_id == sub_id))
        assert first is not None and first.period_start == sub.current_period_start
        with pytest.raises(IntegrityError, match="uq_payments_cycle"):
            billing_cycle.charge_period(uow, sub, session.get_one(Plan, sub.plan_id),
                                        sub.current_period_start)
            uow.flush()


def test_a_subscription_held_elsewhere_is_looked_at_again_soon(
    api: Api, worker: subprocess.Popen[bytes], container: Container
) -> None:
    """A message that finds its subscription locked (SKIP LOCKED) sends itself again after
    a second, instead of leaving it to the scheduler's lease (300 s; no scheduler runs)."""
    [sub_id] = subscribe_many(api, 1)
    end = make_due(container, [sub_id])
    delayed = f"{container.config.redis_namespace}-dramatiq:default.DQ.msgs"
    with container.session_factory() as holder:
        holder.get_one(Subscription, sub_id, with_for_update=True)
        container.enqueue("process_subscriptions", [sub_id])
        eventually(lambda: int(container.redis.hlen(delayed)) == 1, 15,
                   what="the skipped subscription to be sent again, delayed")
        assert all(p.period_start != end for p in cycle_payments(container, [sub_id]))
    eventually(lambda: renewed(container, [sub_id]), 30, what="the renewal")
    assert_renewed_exactly_once(container, [sub_id], end)


def test_work_due_before_the_scheduler_started_is_claimed_at_once(
    api: Api, worker: subprocess.Popen[bytes], container: Container, config: Config
) -> None:
    """A scheduler (re)started by a deploy or after a crash claims what fell due meanwhile
    when it starts, not one interval later (here an hour)."""
    sub_ids = subscribe_many(api, 2)
    end = make_due(container, sub_ids)
    env = child_env(config, RENEWAL_INTERVAL_SECONDS="3600")
    scheduler = subprocess.Popen([sys.executable, "-m", "app.scheduler"], env=env, cwd=ROOT,
                                 start_new_session=True)
    try:
        eventually(lambda: renewed(container, sub_ids), 60, what="the due subscriptions to renew")
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=20)
    assert_renewed_exactly_once(container, sub_ids, end)
