"""Properties where money and time meet the services: test-clock advances and plan changes.

The services run against the real database and sandbox; the actors' messages are run inline
in this thread (`Inline`, a synchronous stand-in for the broker), so hypothesis can try many
sequences quickly and each one ends fully settled.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.billing import proration
from app.billing.periods import Interval, add_intervals, next_boundary
from app.bootstrap import Container
from app.models import (
    ClockStatus,
    OutboxEvent,
    Payment,
    PaymentPurpose,
    PaymentStatus,
    Provider,
    SandboxCharge,
    Subscription,
    TestClock,
)
from app.models.uow import UnitOfWork
from app.services import charge, clocks, customers, plans, subscriptions
from app.services.clocks import advance
from app.services.scope import Scope
from app.services.tenants import create_tenant

T = TypeVar("T")
NOMINAL_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}
# Each example is a few real transactions: few examples, and no shrinking (minutes here).
PROPERTY = settings(max_examples=15, deadline=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass
class Inline:
    """The broker of `uow()`'s units of work: runs each message's service right here, in the
    order they were sent."""

    container: Container
    sent: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def __call__(self, actor: str, *args: Any, delay_ms: int | None = None) -> None:
        self.sent.append((actor, args))

    def uow(self) -> UnitOfWork:
        """A unit of work whose messages are sent here."""
        return UnitOfWork(self.container.session_factory, self)

    def drain(self) -> None:
        c, lease = self.container, self.container.config.payment_lease_seconds
        while self.sent:
            actor, args = self.sent.pop(0)
            if actor == "charge_payment":
                charge.charge_payments(self.uow, c.providers, args[:1], lease_seconds=lease)
            elif actor == "advance_test_clock":
                advance.advance_clock(self.uow, c.providers, args[0], lease_seconds=lease)
            else:
                raise AssertionError(f"unexpected message {actor}{args}")


@dataclass
class World:
    """A fresh tenant with a customer on a test clock, and the services bound to them."""

    container: Container
    scope: Scope
    clock_id: str
    customer_id: str
    method_id: str
    inline: Inline

    @classmethod
    def at(cls, container: Container, frozen_time: datetime) -> World:
        with container.uow() as uow:
            tenant = create_tenant(uow, f"prop-{uuid.uuid4().hex[:8]}")
            uow.commit()
        scope = Scope(tenant.tenant_id, livemode=False)
        world = cls(container, scope, "", "", "", Inline(container))
        world.clock_id = world.do(lambda u: clocks.create_clock(u, scope, frozen_time)).id
        world.customer_id = world.do(lambda u: customers.create_customer(
            u, scope, email=None, name=None, metadata={}, test_clock_id=world.clock_id)).id
        world.method_id = world.do(lambda u: customers.attach_payment_method(
            u, container.providers, scope, world.customer_id, provider=Provider.SANDBOX,
            token="tok_ok")).id
        return world

    def do(self, action: Callable[[UnitOfWork], T]) -> T:
        """Run one service call in its own committed unit of work, then its messages."""
        with self.inline.uow() as uow:
            result = action(uow)
            uow.commit()
        self.inline.drain()
        return result

    def plan(self, amount: int, interval: str, count: int) -> str:
        return self.do(lambda u: plans.create_plan(
            u, self.scope, code=uuid.uuid4().hex[:12], name="p", amount=amount,
            currency="usd", interval=interval, interval_count=count, trial_days=0)).id

    def subscribe(self, plan_id: str) -> str:
        return self.do(lambda u: subscriptions.create_subscription(
            u, self.scope, customer_id=self.customer_id, plan_id=plan_id,
            payment_method_id=self.method_id, trial_days=None, metadata={})).id

    def advance(self, to: datetime) -> None:
        self.do(lambda u: clocks.start_advance(u, self.scope, self.clock_id, to))

    def get(self, model: type[T], object_id: str) -> T:
        with self.container.session_factory() as session:
            found = session.get(model, object_id)
            assert found is not None
            return found

    def payments(self, sub_id: str) -> list[Payment]:
        with self.container.session_factory() as session:
            return list(session.scalars(select(Payment).where(Payment.subscription_id == sub_id)
                                        .order_by(Payment.id)))

    def count(self, query: Any) -> int:
        with self.container.session_factory() as session:
            return int(session.scalar(query) or 0)


@st.composite
def anchors(draw: st.DrawFn) -> datetime:
    """UTC instants, half of them on the 28th-31st, where month arithmetic clamps."""
    year, month = draw(st.integers(2000, 2030)), draw(st.integers(1, 12))
    last = calendar.monthrange(year, month)[1]
    day = draw(st.one_of(st.integers(28, last), st.integers(1, last)))
    seconds = draw(st.integers(0, 86_399))
    return datetime(year, month, day, tzinfo=UTC) + timedelta(seconds=seconds)


# An advance: a share of a nominal period, or exactly to the next period boundary.
steps = st.one_of(st.floats(min_value=0.001, max_value=2.5), st.just("boundary"))


@PROPERTY
@given(anchor=anchors(), interval=st.sampled_from(["day", "week", "month", "year"]),
       count=st.integers(1, 3), moves=st.lists(steps, min_size=1, max_size=4))
def test_clock_advances_bill_each_calendar_period_exactly_once(
    container: Container, anchor: datetime, interval: Interval, count: int,
    moves: list[float | str],
) -> None:
    world = World.at(container, anchor)
    sub_id = world.subscribe(world.plan(1000, interval, count))
    nominal = timedelta(days=NOMINAL_DAYS[interval] * count)
    now = anchor
    for move in moves:
        if move == "boundary":
            now = next_boundary(anchor, interval, count, now)
        else:
            assert isinstance(move, float)
            now += max(nominal * move, timedelta(seconds=1))
        world.advance(now)

    bounds = [anchor]
    while (following := add_intervals(anchor, interval, count, len(bounds))) <= now:
        bounds.append(following)
    payments = world.payments(sub_id)
    assert [p.period_start for p in payments] == bounds
    assert {(p.purpose, p.status, p.amount, len(p.attempts)) for p in payments} == {
        (PaymentPurpose.CYCLE, PaymentStatus.SUCCEEDED, 1000, 1)}
    charged = world.count(select(func.count()).select_from(SandboxCharge).where(
        SandboxCharge.payment_id.in_([p.id for p in payments])))
    assert charged == len(payments)
    sub = world.get(Subscription, sub_id)
    assert (sub.current_period_start, sub.current_period_end) == (
        bounds[-1], add_intervals(anchor, interval, count, len(bounds)))
    assert sub.next_event_at == sub.current_period_end
    renewed = world.count(select(func.count()).select_from(OutboxEvent).where(
        OutboxEvent.key == sub_id, OutboxEvent.type == "subscription.renewed"))
    assert renewed == len(bounds) - 1
    assert world.get(TestClock, world.clock_id).status is ClockStatus.READY


@PROPERTY
@given(anchor=anchors(), old=st.integers(1, 99_999), new=st.integers(1, 99_999),
       share=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
       periods=st.integers(1, 4))
def test_plan_change_money_is_conserved_through_renewals(
    container: Container, anchor: datetime, old: int, new: int, share: float, periods: int,
) -> None:
    """Collected minus credit left = first period + the proration's net + every renewal."""
    world = World.at(container, anchor)
    old_plan, new_plan = world.plan(old, "day", 2), world.plan(new, "day", 2)
    sub_id = world.subscribe(old_plan)
    end = add_intervals(anchor, "day", 2, 1)
    # Whole seconds, floored: strictly inside the period (a float product can round up to
    # `end` itself, where the renewal happens first and the change prorates the next period).
    at = anchor + timedelta(seconds=int((end - anchor).total_seconds() * share))
    if at > anchor:
        world.advance(at)
    world.do(lambda u: subscriptions.change_plan(
        u, world.scope, sub_id, plan_id=new_plan,
        proration_behavior="create_prorations"))
    world.advance(add_intervals(anchor, "day", 2, periods))

    net = proration.change_plan(old, new, anchor, end, at).net
    payments = world.payments(sub_id)
    assert {p.status for p in payments} == {PaymentStatus.SUCCEEDED}
    collected = sum(p.amount for p in payments)
    credit = world.get(Subscription, sub_id).credit_balance
    assert collected - credit == old + net + new * periods
    renewals_ = [p for p in payments if p.purpose is PaymentPurpose.CYCLE][1:]
    assert all(p.amount <= new for p in renewals_)
    assert len([p for p in payments if p.purpose is PaymentPurpose.PRORATION]) == (net > 0)
