"""Time as the engine sees it: real UTC, or a test clock's frozen time for its customers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from app.clock import utcnow
from app.ids import new_id
from app.models import ClockStatus, TestClock
from app.models.uow import UnitOfWork
from app.services.errors import Conflict, Forbidden, Invalid
from app.services.scope import Scope

Enqueue = Callable[..., None]


def now_for(session: Session, test_clock_id: str | None) -> datetime:
    """The current time of an object: its test clock's frozen time, else real UTC."""
    if test_clock_id is None:
        return utcnow()
    clock = session.get_one(TestClock, test_clock_id)
    return clock.frozen_time


def create_clock(uow: UnitOfWork, scope: Scope, frozen_time: datetime) -> TestClock:
    """A new test clock, ready, at `frozen_time` (test mode only)."""
    _test_mode_only(scope)
    clock = TestClock(
        id=new_id("clock"),
        tenant_id=scope.tenant_id,
        livemode=False,
        frozen_time=frozen_time,
        status=ClockStatus.READY,
    )
    uow.session.add(clock)
    uow.session.flush()
    return clock


def get_clock(session: Session, scope: Scope, clock_id: str) -> TestClock:
    """A test clock in scope (test mode only)."""
    _test_mode_only(scope)
    return scope.get(session, TestClock, clock_id)


def start_advance(
    uow: UnitOfWork, scope: Scope, enqueue: Enqueue, clock_id: str, frozen_time: datetime
) -> TestClock:
    """Move a ready clock forward; the worker then runs everything that fell due, in order."""
    _test_mode_only(scope)
    clock = scope.get(uow.session, TestClock, clock_id, lock=True)
    if clock.status is not ClockStatus.READY:
        raise Conflict("The test clock is still advancing.", code="test_clock_advancing")
    if frozen_time <= clock.frozen_time:
        raise Invalid(
            "frozen_time", "A test clock only moves forward.", code="test_clock_backwards"
        )
    clock.frozen_time = frozen_time
    clock.status = ClockStatus.ADVANCING
    uow.after_commit(lambda: enqueue("advance_test_clock", clock.id))
    return clock


def _test_mode_only(scope: Scope) -> None:
    if scope.livemode:
        raise Forbidden("Test clocks are available in test mode only.")
