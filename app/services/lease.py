"""A claim's lease on the payments it sends, kept alive while its worker lives.

A claim stamps its payments with a lease that ends `seconds` from now and its own owner
token. While the worker sends them, a heartbeat thread pushes the end forward every third
of the lease, for the rows the claim still owns; so the lease lapses, and another worker
may take the payment over, only when this worker died or cannot reach the database, and
never because the provider is slow. Settling clears the owner, which stops the heartbeat's
effect on that row at once, even if a beat is already under way.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import SQLAlchemyError

from app.clock import utcnow
from app.models import Payment, PaymentStatus
from app.models.uow import UnitOfWorkFactory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    """One claim's hold on its payments: who holds it, and for how long each beat."""

    owner: str
    seconds: int

    @classmethod
    def new(cls, seconds: int) -> Lease:
        return cls(uuid.uuid4().hex, seconds)

    def until(self) -> datetime:
        """When the lease ends if it is not renewed: `seconds` from now."""
        return utcnow() + timedelta(seconds=self.seconds)


@contextmanager
def kept_alive(uows: UnitOfWorkFactory, held: Sequence[tuple[Lease, str]]) -> Iterator[None]:
    """Renew these (lease, payment id) holds every third of their lease while the block runs."""
    by_lease: dict[Lease, list[str]] = {}
    for lease, payment_id in held:
        by_lease.setdefault(lease, []).append(payment_id)
    if not by_lease:
        yield
        return
    stop = threading.Event()
    beats = [threading.Thread(target=_beat, args=(uows, lease, ids, stop), daemon=True,
                              name="lease-heartbeat") for lease, ids in by_lease.items()]
    for beat in beats:
        beat.start()
    try:
        yield
    finally:
        stop.set()  # a beat still running changes nothing once the payments are settled


def _beat(uows: UnitOfWorkFactory, lease: Lease, payment_ids: list[str],
          stop: threading.Event) -> None:
    while not stop.wait(lease.seconds / 3):
        try:
            renew(uows, lease, payment_ids)
        except SQLAlchemyError as exc:  # the lease lapses if this lasts: as if we had died
            log.warning("could not renew a payment lease", extra={
                "payments": len(payment_ids), "error": type(exc).__name__})


def renew(uows: UnitOfWorkFactory, lease: Lease, payment_ids: Sequence[str]) -> int:
    """Push the lease's end forward on the payments it still holds; how many it holds.

    Rows another transaction has locked (being settled right now) are skipped, not waited
    for: the beat never blocks a settlement, nor deadlocks with one.
    """
    with uows() as uow:
        held = (
            select(Payment.id)
            .where(Payment.id.in_(payment_ids), Payment.lease_owner == lease.owner,
                   Payment.status == PaymentStatus.PROCESSING)
            .order_by(Payment.id)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        renewed = cast(CursorResult[Any], uow.session.execute(
            update(Payment)
            .where(Payment.id.in_(held))
            .values(lease_until=lease.until(), updated_at=Payment.updated_at)
            .execution_options(synchronize_session=False)
        )).rowcount
        uow.commit()
    return int(renewed or 0)
