"""Time as the engine sees it: real UTC, or a test clock's frozen time for its customers."""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, String, bindparam, case, func, select, text, update
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
    clock.generation += 1
    uow.enqueue("advance_test_clock", clock.id, 0, clock.generation)
    return clock


def _test_mode_only(scope: Scope) -> None:
    if scope.livemode:
        raise Forbidden("Test clocks are available in test mode only.")


#: The advisory lock key named `n`: a clock's (its id) or a tenant slot's. `driving` takes
#: it for its session, `redrive_stalled` for its transaction: both must name it alike.
_KEY = func.hashtextextended(bindparam("n", type_=String), 0)
#: The clock's `driving` lock, taken for the transaction if it is free.
_TRY_DRIVING = select(func.pg_try_advisory_xact_lock(_KEY))
#: A clock's advance held by the broker: (clock id, generation; None if sent before
#: generations existed).
Held = tuple[str, int | None]


def redrive_stalled(uow: UnitOfWork, held: Callable[[], Collection[Held]], *,
                    stale_seconds: int, batch: int) -> int:
    """Send a new `advance_test_clock` (after commit) for each clock left `advancing` whose
    advance message is lost (a Redis restart), looked at once `stale_seconds` have passed
    since it was started, re-driven or last looked at.

    Its advance is not lost while the broker holds a message for its generation (`held`:
    ready, delayed as a retry or the advance's next look, or fetched by a worker and waiting
    there, however long the queue), nor while a worker drives the clock: this takes the
    clock's `driving` lock for the rest of its transaction, and leaves the clock alone if it
    cannot. The new message carries a new generation, which voids the one it replaces should
    that still run (a worker that fetched it before Redis restarted): one message drives a
    clock at a time. Rows are taken with SKIP LOCKED.
    """
    now = utcnow()
    overdue = uow.session.execute(
        select(TestClock.id, TestClock.generation)
        .where(TestClock.status == ClockStatus.ADVANCING,
               TestClock.updated_at < now - timedelta(seconds=stale_seconds))
        .order_by(TestClock.updated_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    ).all()
    if not overdue:
        return 0
    alive = set(held())
    lost = [clock_id for clock_id, generation in overdue
            if not {(clock_id, generation), (clock_id, None)} & alive
            and uow.session.scalar(_TRY_DRIVING, {"n": clock_id})]
    sent = uow.session.execute(  # each looked at now: not again for stale_seconds
        update(TestClock).where(TestClock.id.in_([clock_id for clock_id, _ in overdue]))
        .values(updated_at=now, generation=TestClock.generation
                + case((TestClock.id.in_(lost), 1), else_=0))
        .returning(TestClock.id, TestClock.generation))
    for clock_id, generation in sent:
        if clock_id in lost:
            uow.enqueue("advance_test_clock", clock_id, 0, generation)
    return len(overdue)


def held_advance(actor_name: str, args: Sequence[Any]) -> Held | None:
    """The clock advance a message stands for, if it is one: `advance_test_clock(clock_id,
    waits, generation)`, or `clock_retries_exhausted` for such a message (which sends it
    again)."""
    if actor_name == "clock_retries_exhausted":
        actor_name, args = "advance_test_clock", args[0]["args"]
    if actor_name != "advance_test_clock":
        return None
    return str(args[0]), (int(args[2]) if len(args) > 2 and args[2] is not None else None)


class Drive(enum.Enum):
    """What a worker may do with a clock's advance message."""

    MINE = "mine"  # advance it now
    TAKEN = "taken"  # another worker is advancing it: drop the message
    TENANT_BUSY = "tenant_busy"  # the tenant's other clocks use every slot: send it again later
    VOID = "void"  # the scheduler replaced it (`redrive_stalled`): drop it


@contextmanager
def driving(
    engine: Engine, clock_id: str, *, tenant_slots: int, generation: int | None
) -> Iterator[Drive]:
    """Whether the caller may advance the clock with its message of `generation`: PostgreSQL
    advisory locks on a connection of its own (autocommit: no transaction left open), held
    while the caller advances it, one on the clock and one of its tenant's `tenant_slots`
    (TEST_CLOCK_TENANT_CONCURRENCY).

    The locks end with their connection, so a worker that dies frees the clock and its slot
    for the next message; a second message for a clock being advanced finds it taken; a
    message of an older generation than the clock's is void (the clock's generation is read
    once its lock is held; a message sent before generations existed has None); a tenant
    advancing many clocks at once holds at most `tenant_slots` worker threads.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        held: list[int] = []
        try:
            if not _lock(connection, clock_id, held):
                yield Drive.TAKEN
                return
            tenant_id, current = connection.execute(
                select(TestClock.tenant_id, TestClock.generation)
                .where(TestClock.id == clock_id)).one()
            if generation is not None and generation != current:
                yield Drive.VOID
                return
            slots = (f"clock-slot:{tenant_id}:{n}" for n in range(tenant_slots))
            yield Drive.MINE if any(_lock(connection, s, held) for s in slots) \
                else Drive.TENANT_BUSY
        finally:
            try:
                for key in held:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            except DBAPIError:  # the connection is gone, and the locks with it
                connection.invalidate()


def _lock(connection: Connection, name: str, held: list[int]) -> bool:
    """Take the session advisory lock named `name` if it is free; remember it in `held`."""
    key, taken = connection.execute(_TRY_SESSION_LOCK, {"n": name}).one()
    if taken:
        held.append(int(key))
    return bool(taken)


#: The lock named `n` for the session if it is free, and its key (to release it).
_TRY_SESSION_LOCK = select(_KEY, func.pg_try_advisory_lock(_KEY))
