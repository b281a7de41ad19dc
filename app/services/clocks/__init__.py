"""Time as the engine sees it: real UTC, or a test clock's frozen time for its customers."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.clock import utcnow
from app.ids import new_id
from app.models import ClockStatus, TestClock
from app.models.uow import UnitOfWork
from app.services.errors import Conflict, Forbidden, Invalid
from app.services.scope import Scope


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
    uow: UnitOfWork, scope: Scope, clock_id: str, frozen_time: datetime
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
    uow.enqueue("advance_test_clock", clock.id)
    return clock


def _test_mode_only(scope: Scope) -> None:
    if scope.livemode:
        raise Forbidden("Test clocks are available in test mode only.")


def redrive_stalled(uow: UnitOfWork, *, stale_seconds: int, batch: int) -> int:
    """Send `advance_test_clock` again (after commit) for clocks left `advancing` longer than
    `stale_seconds`.

    Its message may have been lost (a Redis restart, a killed worker). A clock still being
    advanced is harmless to send again: `driving` lets one worker at a time advance it.
    Rows are taken with SKIP LOCKED and their `updated_at` pushed forward, as for payments.
    """
    now = utcnow()
    stalled = list(uow.session.scalars(
        select(TestClock.id)
        .where(TestClock.status == ClockStatus.ADVANCING,
               TestClock.updated_at < now - timedelta(seconds=stale_seconds))
        .limit(batch)
        .with_for_update(skip_locked=True)
    ))
    if stalled:
        uow.session.execute(update(TestClock).where(TestClock.id.in_(stalled))
                            .values(updated_at=now))
    for clock_id in stalled:
        uow.enqueue("advance_test_clock", clock_id)
    return len(stalled)


class Drive(enum.Enum):
    """What a worker may do with a clock's advance message."""

    MINE = "mine"  # advance it now
    TAKEN = "taken"  # another worker is advancing it: drop the message
    TENANT_BUSY = "tenant_busy"  # the tenant's other clocks use every slot: send it again later


@contextmanager
def driving(engine: Engine, clock_id: str, *, tenant_slots: int) -> Iterator[Drive]:
    """Whether the caller may advance the clock: PostgreSQL advisory locks on a connection
    of its own (autocommit: no transaction left open), held while the caller advances it,
    one on the clock and one of its tenant's `tenant_slots` (TEST_CLOCK_TENANT_CONCURRENCY).

    The locks end with their connection, so a worker that dies frees the clock and its slot
    for the next message; a second message for a clock being advanced finds it taken; a
    tenant advancing many clocks at once holds at most `tenant_slots` worker threads.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        tenant_id = connection.scalar(select(TestClock.tenant_id)
                                      .where(TestClock.id == clock_id))
        held: list[int] = []
        try:
            if _lock(connection, clock_id, held):
                slots = (f"clock-slot:{tenant_id}:{n}" for n in range(tenant_slots))
                yield Drive.MINE if any(_lock(connection, s, held) for s in slots) \
                    else Drive.TENANT_BUSY
            else:
                yield Drive.TAKEN
        finally:
            try:
                for key in held:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            except DBAPIError:  # the connection is gone, and the locks with it
                connection.invalidate()


def _lock(connection: Connection, name: str, held: list[int]) -> bool:
    """Take the session advisory lock named `name` if it is free; remember it in `held`."""
    key = int(connection.scalar(text("SELECT hashtextextended(:n, 0)"), {"n": name}))
    if connection.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}):
        held.append(key)
        return True
    return False
