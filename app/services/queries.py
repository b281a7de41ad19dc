"""The read side: what every GET reads, and the one place that decides where a read runs.

Views call `payment(reader, scope, id)`, `payments(reader, scope, ...)`, … and get the
public JSON shape back; no view touches a model or a session. Each function runs its
read through the caller's `Reader`, which picks the database: a replica that has
replayed the caller's last write when there is one, else the primary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app import render
from app.cache import Cache
from app.models import (
    Customer,
    Payment,
    PaymentAttempt,
    PaymentMethod,
    Plan,
    Refund,
    SandboxCharge,
    Subscription,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.models.base import TenantOwned
from app.models.payment import loaded, row_layout
from app.models.prepared import Prepared, autocommit
from app.replicas import Replica, Replicas, parse_lsn
from app.services.clocks import get_clock
from app.services.errors import Forbidden, NotFound
from app.services.scope import Scope, missing, storable

T = TypeVar("T")
M = TypeVar("M", bound=TenantOwned)
Json = dict[str, Any]
Page = tuple[list[Json], bool]


@dataclass(frozen=True)
class Reader:
    """Where one caller's reads run, and the cache they may be answered from."""

    primary: sessionmaker[Session]
    cache: Cache
    replicas: Replicas | None = None
    key_id: str | None = None  # whose own writes every read must see

    def run(self, read: Callable[[Session], T], *, fresh: bool = False) -> T:
        """Run `read` in a transaction of its own and return what it returns.

        On a replica that has replayed this caller's last write, else on the primary;
        `fresh`: on the primary (a cache fill, the sandbox ledger). A replica that fails
        mid-read costs a retry on the primary, never an error. In autocommit, so a read of
        one statement is one round trip (no BEGIN, no ROLLBACK).
        """
        if fresh or self.replicas is None:
            return self._on(self.primary, read)
        needed = self.replicas.last_write(self.key_id)
        chosen = self.replicas.choose(needed)
        if chosen is not None:
            replica, caught_up = chosen
            try:
                with _reading(replica.sessions) as session:
                    if caught_up or self._replayed(session, replica) >= needed:
                        return read(session)
            except (OperationalError, InterfaceError) as exc:
                self.replicas.failed(replica, exc)
                return self._on(self.primary, read)
        self.replicas.fell_back()
        return self._on(self.primary, read)

    @staticmethod
    def _on(sessions: sessionmaker[Session], read: Callable[[Session], T]) -> T:
        with _reading(sessions) as session:
            return read(session)

    @staticmethod
    def _replayed(session: Session, replica: Replica) -> int:
        replica.saw(parse_lsn(session.scalar(text("SELECT pg_last_wal_replay_lsn()"))))
        return replica.replayed


@contextmanager
def _reading(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A new session in autocommit, switched by the driver (SQLAlchemy's AUTOCOMMIT option
    would send a SET, a round trip, each time the pool takes the connection back)."""
    with sessions() as session, autocommit(session.connection().connection):
        yield session


_PAYMENT_FIELDS, _ATTEMPT_FIELDS = row_layout()
#: A payment in scope with its attempts (one row each, or one row of NULLs: none yet).
_PAYMENT = Prepared("payment_with_attempts", select(
    *(getattr(Payment, field) for field in _PAYMENT_FIELDS),
    *(getattr(PaymentAttempt, field) for field in _ATTEMPT_FIELDS),
).outerjoin(PaymentAttempt, PaymentAttempt.payment_id == Payment.id).where(
    Payment.id == bindparam("id"), Payment.tenant_id == bindparam("tenant_id"),
    Payment.livemode == bindparam("livemode"),
).order_by(PaymentAttempt.number))


def payment(reader: Reader, scope: Scope, payment_id: str) -> Json:
    """The payment with its attempts, read by one prepared statement (GET /payments/{id} is
    a hot path: no ORM query to build, compile-cache or load)."""
    def read(session: Session) -> Json:
        rows = _PAYMENT.rows(session.connection(), {
            "id": payment_id, "tenant_id": scope.tenant_id, "livemode": scope.livemode,
        }) if storable(payment_id) else []
        if not rows:
            raise missing(Payment, payment_id)
        return render.payment(loaded(rows))

    return reader.run(read)


def payments(reader: Reader, scope: Scope, *, limit: int, starting_after: str | None,
             filters: Mapping[str, object]) -> Page:
    return _page(reader, scope, Payment, render.payment, limit, starting_after, filters)


def customer(reader: Reader, scope: Scope, customer_id: str) -> Json:
    return reader.run(lambda s: render.customer(scope.get(s, Customer, customer_id)))


def customers(reader: Reader, scope: Scope, *, limit: int, starting_after: str | None) -> Page:
    return _page(reader, scope, Customer, render.customer, limit, starting_after, {})


def payment_methods(reader: Reader, scope: Scope, customer_id: str, *, limit: int,
                    starting_after: str | None) -> Page:
    """A customer's payment methods (404 for an unknown customer), newest first."""
    reader.run(lambda s: scope.get(s, Customer, customer_id))
    return _page(reader, scope, PaymentMethod, render.payment_method, limit, starting_after,
                 {"customer_id": customer_id})


def refund(reader: Reader, scope: Scope, refund_id: str) -> Json:
    return reader.run(lambda s: render.refund(scope.get(s, Refund, refund_id)))


def refunds(reader: Reader, scope: Scope, payment_id: str, *, limit: int,
            starting_after: str | None) -> Page:
    """A payment's refunds (404 for an unknown payment), newest first."""
    reader.run(lambda s: scope.get(s, Payment, payment_id))
    return _page(reader, scope, Refund, render.refund, limit, starting_after,
                 {"payment_id": payment_id})


def plan(reader: Reader, scope: Scope, plan_id: str) -> Json:
    found = reader.cache.plan(scope, plan_id, lambda: reader.run(
        lambda s: render.plan(scope.get(s, Plan, plan_id)), fresh=True))
    assert found is not None  # a missing plan raised NotFound
    return found


def plans(reader: Reader, scope: Scope, *, limit: int, starting_after: str | None) -> Page:
    return _page(reader, scope, Plan, render.plan, limit, starting_after, {})


def subscription(reader: Reader, scope: Scope, sub_id: str) -> Json:
    return reader.run(lambda s: render.subscription(scope.get(s, Subscription, sub_id)))


def subscriptions(reader: Reader, scope: Scope, *, limit: int, starting_after: str | None,
                  filters: Mapping[str, object]) -> Page:
    return _page(reader, scope, Subscription, render.subscription, limit, starting_after, filters)


def test_clock(reader: Reader, scope: Scope, clock_id: str) -> Json:
    return reader.run(lambda s: render.test_clock(get_clock(s, scope, clock_id)))


def sandbox_charges(reader: Reader, scope: Scope, payment_id: str | None) -> list[Json]:
    """The sandbox's ledger of a tenant's accepted charges (test mode), newest first."""
    if scope.livemode:
        raise Forbidden("The sandbox is available in test mode only.")
    query = select(SandboxCharge).where(SandboxCharge.tenant_id == scope.tenant_id)
    if payment_id is not None:
        query = query.where(SandboxCharge.payment_id == payment_id)
    query = query.order_by(SandboxCharge.id.desc()).limit(1000)
    return reader.run(lambda s: [render.sandbox_charge(c) for c in s.scalars(query)], fresh=True)


def webhook_endpoint(reader: Reader, scope: Scope, endpoint_id: str) -> Json:
    return reader.run(lambda s: render.webhook_endpoint(_live_endpoint(s, scope, endpoint_id)))


def webhook_endpoints(reader: Reader, scope: Scope, *, limit: int,
                      starting_after: str | None) -> Page:
    return _page(reader, scope, WebhookEndpoint, render.webhook_endpoint, limit, starting_after,
                 {"deleted_at": None})


def webhook_deliveries(reader: Reader, scope: Scope, endpoint_id: str, *, limit: int,
                       starting_after: str | None) -> Page:
    def read(session: Session) -> Page:
        _live_endpoint(session, scope, endpoint_id)
        rows, more = scope.page(session, WebhookDelivery, limit=limit,
                                starting_after=starting_after, filters={"endpoint_id": endpoint_id})
        return [render.webhook_delivery(row) for row in rows], more

    return reader.run(read)


def _live_endpoint(session: Session, scope: Scope, endpoint_id: str) -> WebhookEndpoint:
    endpoint = scope.get(session, WebhookEndpoint, endpoint_id)
    if endpoint.deleted_at is not None:
        raise NotFound(f"No such webhook endpoint: '{endpoint_id}'")
    return endpoint


def _page(reader: Reader, scope: Scope, model: type[M], shape: Callable[[M], Json], limit: int,
          starting_after: str | None, filters: Mapping[str, object]) -> Page:
    def read(session: Session) -> Page:
        rows, more = scope.page(session, model, limit=limit, starting_after=starting_after,
                                filters=filters)
        return [shape(row) for row in rows], more

    return reader.run(read)
