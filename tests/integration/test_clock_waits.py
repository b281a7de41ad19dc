"""A test clock waiting for a payment another worker is charging draws on none of its
advance's retries, and its own payments' transient errors are retries that are not logged
as errors.

Found in review of 142dfc6: waiting for another worker's payment was a Dramatiq retry of the
advance (1-2 s, 2-4 s, ... with the default timings: tok_slow_10 charged elsewhere took
22-26 s to `ready` instead of 20 s), and those waits used up the CHARGE_MAX_RETRIES that the
clock's own payments needed: a renewal under a provider outage ended `failed` after 1-2
attempts instead of 1 + CHARGE_MAX_RETRIES. Each stop was logged at ERROR with a traceback.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.bootstrap import Container, build
from app.config import Config
from app.models import ClockStatus, Payment, PaymentAttempt, PaymentStatus, Provider, TestClock
from app.models.uow import UnitOfWork
from app.scheduler.queues import held_messages
from app.services import clocks, customers, plans, subscriptions
from app.services.scope import Scope
from app.services.tenants import create_tenant
from tests.conftest import start_worker
from tests.support import eventually

START = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def own(config: Config) -> Config:
    """The session's settings on a Redis namespace of this module, with retries slow enough
    that a test sees the advance stop before its next run."""
    return replace(config, redis_namespace=f"{config.redis_namespace}-wait-{uuid.uuid4().hex[:6]}",
                   charge_min_backoff_ms=200, charge_max_backoff_ms=2000)


@pytest.fixture(scope="module")
def log(own: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The log of a worker fleet of this module's own (WARNING and above)."""
    path = tmp_path_factory.mktemp("clock-waits") / "worker.log"
    with path.open("wb") as out:
        process = start_worker(own, stdout=out, stderr=subprocess.STDOUT)
        yield path
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def own_container(own: Config) -> Iterator[Container]:
    container = build(own)
    yield container
    container.engine.dispose()


class Setup:
    """Objects made through the services, their messages dropped (as if not sent yet)."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.scope = Scope(self.do(lambda u: create_tenant(u, f"w-{uuid.uuid4().hex[:8]}"))
                           .tenant_id, False)
        self.clock_id = self.do(lambda u: clocks.create_clock(u, self.scope, START)).id
        self.plan_id = self.do(lambda u: plans.create_plan(
            u, self.scope, code="monthly", name="Monthly", amount=1000, currency="usd",
            interval="month", interval_count=1, trial_days=0)).id

    def do(self, action: Callable[[UnitOfWork], Any]) -> Any:
        with UnitOfWork(self.container.session_factory, lambda *a, **k: None) as uow:
            done = action(uow)
            uow.commit()
            return done

    def subscribe(self, token: str, trial_days: int | None = None) -> str:
        scope, clock_id = self.scope, self.clock_id
        customer = self.do(lambda u: customers.create_customer(
            u, scope, email=None, name=None, metadata={}, test_clock_id=clock_id))
        method = self.do(lambda u: customers.attach_payment_method(
            u, self.container.providers, scope, customer.id, provider=Provider.SANDBOX,
            token=token))
        return str(self.do(lambda u: subscriptions.create_subscription(
            u, scope, customer_id=customer.id, plan_id=self.plan_id,
            payment_method_id=method.id, trial_days=trial_days, metadata={})).id)

    def advance(self, to: datetime) -> None:
        clock = self.do(lambda u: clocks.start_advance(u, self.scope, self.clock_id, to))
        self.container.enqueue("advance_test_clock", self.clock_id, 0, clock.generation)

    def next_looks(self) -> list[int]:
        """The `waits` of the advance messages the broker holds for this clock."""
        return [m["args"][1] for m in held_messages(
            self.container.redis, self.container.broker.namespace, "clocks", silent_ms=60_000)
            if m["args"][0] == self.clock_id and len(m["args"]) > 1]

    def clock(self) -> TestClock:
        with self.container.session_factory() as session:
            return session.get_one(TestClock, self.clock_id)

    def lease(self, subscription_id: str, until: datetime) -> None:
        """Another worker holds the subscription's payment, until `until`."""
        with self.container.session_factory() as session:
            session.execute(update(Payment).where(Payment.subscription_id == subscription_id)
                            .values(status=PaymentStatus.PROCESSING, lease_owner="elsewhere",
                                    lease_until=until))
            session.commit()

    def payment(self, subscription_id: str) -> tuple[Payment, int]:
        with self.container.session_factory() as session:
            payment = session.scalars(select(Payment)
                                      .where(Payment.subscription_id == subscription_id)).one()
            attempts = session.scalar(select(func.count()).select_from(PaymentAttempt)
                                      .where(PaymentAttempt.payment_id == payment.id))
            return payment, int(attempts or 0)


def test_waiting_for_another_workers_payment_leaves_every_retry_to_an_outage(
    own_container: Container, log: Path
) -> None:
    setup = Setup(own_container)
    held = setup.subscribe("tok_ok")  # its first payment: another worker is charging it
    setup.lease(held, datetime.now(UTC) + timedelta(hours=1))
    down = setup.subscribe("tok_error", trial_days=1)  # renews on the clock, provider down
    setup.advance(START + timedelta(days=1, hours=12))
    eventually(lambda: any(waits >= 2 for waits in setup.next_looks()), 30,
               what="the advance to wait twice for the held payment")
    setup.lease(held, datetime.now(UTC) - timedelta(seconds=1))  # that worker died
    eventually(lambda: setup.clock().status is ClockStatus.READY, 60, what="the clock")

    assert setup.payment(held)[0].status is PaymentStatus.SUCCEEDED
    payment, attempts = setup.payment(down)
    assert (payment.status, payment.failure_code) == (PaymentStatus.FAILED,
                                                      "provider_unavailable")
    assert attempts == 1 + own_container.config.charge_max_retries


def test_an_advance_stopped_by_an_outage_is_retried_without_an_error_logged(
    own_container: Container, log: Path
) -> None:
    setup = Setup(own_container)
    down = setup.subscribe("tok_error", trial_days=1)
    setup.advance(START + timedelta(days=1, hours=12))
    eventually(lambda: setup.clock().status is ClockStatus.READY, 60, what="the clock")

    assert setup.payment(down)[1] == 1 + own_container.config.charge_max_retries
    errors = [line for line in log.read_text().splitlines()
              if "advance_test_clock" in line and "unhandled exception" in line]
    assert errors == []
