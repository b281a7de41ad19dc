"""The built-in test-mode provider: its token decides each attempt's outcome.

It keeps a ledger (tables `sandbox_charges`, `sandbox_refunds`) of every charge it accepted,
keyed by idempotency key, in its own transactions, exactly as an outside provider would.
It treats keys as Stripe does: a key already answered gets that answer again and charges
nothing; a key still in flight (`tok_slow_N` answers N seconds after the charge) is refused
with a conflict (RequestInFlight) and charges nothing. It refuses live mode on every path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import timedelta

import psycopg2
from psycopg2.extras import execute_values
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.ids import new_id
from app.models.prepared import autocommit
from app.models.sandbox import SandboxCharge, SandboxRefund
from app.providers.base import CardDetails, ChargeRequest, ChargeResult, RefundRequest, RefundResult
from app.providers.errors import (
    InvalidPaymentMethod,
    OutcomeUnknown,
    PaymentDeclined,
    ProviderError,
    ProviderNotConfigured,
    ProviderUnavailable,
    RequestInFlight,
)

_FAIL_N = re.compile(r"tok_fail_([1-9])")
_SLOW_N = re.compile(r"tok_slow_([1-9][0-9]?)")
MAX_SLOW_SECONDS = 60
TOKENS = frozenset(
    {"tok_ok", "tok_decline", "tok_insufficient_funds", "tok_timeout", "tok_error", "tok_action"}
    | {f"tok_fail_{n}" for n in range(1, 10)}
    | {f"tok_slow_{n}" for n in range(1, MAX_SLOW_SECONDS + 1)}
)
ACTION_URL = "https://sandbox.subscription-engine.invalid/authorize/{payment_id}"
#: The ledger insert of a batch, on a raw driver connection, one transaction: an ORM session
#: per charge cost about 2 ms of CPU, a Core statement per charge 0.5 ms (bench/renewals.py).
_INSERT_CHARGES = (
    "INSERT INTO sandbox_charges (idempotency_key, id, tenant_id, payment_id, amount, currency,"
    " amount_refunded, answer_at) VALUES %s ON CONFLICT (idempotency_key) DO NOTHING"
    " RETURNING idempotency_key, id"
)
_CHARGE_ROW = "(%s, %s, %s, %s, %s, %s, 0, now() + %s * interval '1 second')"
#: Charges made earlier with these keys, and whether each one's answer is still to come.
_CHARGES_BY_KEY = (
    "SELECT idempotency_key, id, coalesce(answer_at > now(), false) FROM sandbox_charges"
    " WHERE idempotency_key = ANY(%s)"
)


def _test_only(livemode: bool) -> None:
    if livemode:
        raise ProviderNotConfigured("the sandbox provider is for test mode only")


class SandboxProvider:
    """Deterministic provider for test mode; see the token table in the API contract."""

    name = "sandbox"
    idempotency_window: timedelta | None = None  # the ledger keeps every key

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._sessions = session_factory
        bind = session_factory.kw["bind"]
        assert isinstance(bind, Engine)
        self._engine = bind

    def describe(self, token: str, *, livemode: bool) -> CardDetails:
        _test_only(livemode)
        if token not in TOKENS:
            raise InvalidPaymentMethod("unknown sandbox token; see the token table in the API")
        return CardDetails(brand="visa", last4="4242")

    def detach(self, token: str, *, livemode: bool) -> None:
        """Nothing is saved here: a token is only a name for an outcome."""

    def charge(self, request: ChargeRequest) -> ChargeResult:
        [result] = self.charge_many([request])
        if isinstance(result, ProviderError):
            raise result
        return result

    def charge_many(
        self, requests: Sequence[ChargeRequest]
    ) -> list[ChargeResult | ProviderError]:
        """Each token decides; the charges made go into the ledger in one transaction, and
        the answer comes when the slowest of them (`tok_slow_N`) is due."""
        results: list[ChargeResult | ProviderError | None] = []
        for request in requests:
            try:
                _test_only(request.livemode)
                results.append(self._decide(request))
            except ProviderError as exc:
                results.append(exc)
        charged = [r for r, result in zip(requests, results, strict=True) if result is None]
        try:
            recorded = self._record(charged) if charged else {}
        except (DBAPIError, psycopg2.Error):  # it may have committed or not: a lost answer
            recorded = {}
        made = {key for key, (_, standing) in recorded.items() if standing == "created"}
        slowest = max((_slow(r) for r in charged if r.idempotency_key in made), default=0)
        if slowest:
            time.sleep(slowest)  # tok_slow_N: the charge is made, its answer comes later
        done: list[ChargeResult | ProviderError] = []
        for request, result in zip(requests, results, strict=True):
            if result is None:
                result = _answer(request, recorded.get(request.idempotency_key))
            done.append(result)
        return done

    def lookup(self, request: ChargeRequest) -> ChargeResult | None:
        _test_only(request.livemode)
        with self._sessions() as session:
            charge_id = session.scalar(
                select(SandboxCharge.id).where(
                    SandboxCharge.idempotency_key == request.idempotency_key
                )
            )
        return None if charge_id is None else ChargeResult(status="succeeded", reference=charge_id)

    def cancel(self, request: ChargeRequest) -> ChargeResult | None:
        """Nothing waits here: a `tok_action` charge is never finished, so only a charge the
        ledger holds is found."""
        return self.lookup(request)

    def refund(self, request: RefundRequest) -> RefundResult:
        _test_only(request.livemode)
        with self._sessions() as session, session.begin():
            charge = session.get(SandboxCharge, request.payment_reference, with_for_update=True)
            if charge is None:
                raise PaymentDeclined("charge_not_found", "sandbox: no such charge", hard=True)
            existing = session.scalar(
                select(SandboxRefund.id).where(
                    SandboxRefund.idempotency_key == request.idempotency_key
                )
            )
            if existing is not None:
                return RefundResult(reference=existing)
            if charge.amount_refunded + request.amount > charge.amount:
                raise PaymentDeclined("amount_too_large", "sandbox: over-refund", hard=True)
            refund = SandboxRefund(
                id=new_id("re"),
                charge_id=charge.id,
                idempotency_key=request.idempotency_key,
                amount=request.amount,
            )
            session.add(refund)
            charge.amount_refunded += request.amount
            return RefundResult(reference=refund.id)

    def lookup_refund(self, request: RefundRequest) -> RefundResult | None:
        _test_only(request.livemode)
        with self._sessions() as session:
            refund_id = session.scalar(select(SandboxRefund.id).where(
                SandboxRefund.idempotency_key == request.idempotency_key))
        return None if refund_id is None else RefundResult(reference=refund_id)

    def charge_count(self, payment_id: str) -> int:
        """How many charges the sandbox accepted for one payment (1 at most, if all is well)."""
        with self._sessions() as session:
            return (
                session.scalar(select(func.count()).where(SandboxCharge.payment_id == payment_id))
                or 0
            )

    @staticmethod
    def _decide(request: ChargeRequest) -> ChargeResult | None:
        """Raise the token's error, or return its answer without a charge; None: charge it."""
        token = request.token
        if token == "tok_decline":
            raise PaymentDeclined("card_declined", "Your card was declined.", hard=True)
        if token == "tok_insufficient_funds":
            raise PaymentDeclined(
                "insufficient_funds", "Your card has insufficient funds.", hard=False
            )
        if token == "tok_error":
            raise ProviderUnavailable("sandbox: simulated provider error (HTTP 500)")
        failing = _FAIL_N.fullmatch(token)
        if failing and request.attempt <= int(failing.group(1)):
            raise PaymentDeclined(
                "try_again_later", "The card was declined; try again later.", hard=False
            )
        if token == "tok_action":
            url = ACTION_URL.format(payment_id=request.payment_id)
            return ChargeResult(status="requires_action", reference="", redirect_url=url)
        return None

    def _record(self, requests: Sequence[ChargeRequest]) -> dict[str, tuple[str, str]]:
        """Insert each charge once per idempotency key: key -> (charge id, how it stands:
        `created` now, `answered` before, or still `in_flight`).

        Its own transactions, as an outside provider's ledger would be: one statement each,
        in autocommit (the insert alone, unless some keys were there before).
        """
        connection = self._engine.raw_connection()
        try:
            with autocommit(connection):
                cursor = connection.cursor()
                # In key order: two batches sharing keys then wait on each other without
                # deadlock.
                rows = sorted((r.idempotency_key, new_id("ch"), r.tenant_id, r.payment_id,
                               r.amount, r.currency, _slow(r)) for r in requests)
                created = dict(execute_values(cursor, _INSERT_CHARGES, rows,
                                              page_size=len(rows), template=_CHARGE_ROW,
                                              fetch=True))
                found = {key: (charge_id, "created") for key, charge_id in created.items()}
                missing = [r.idempotency_key for r in requests
                           if r.idempotency_key not in created]
                if missing:
                    cursor.execute(_CHARGES_BY_KEY, (missing,))
                    found.update((key, (charge_id, "in_flight" if pending else "answered"))
                                 for key, charge_id, pending in cursor.fetchall())
                cursor.close()
        finally:
            connection.close()  # back to the pool
        return found


def _slow(request: ChargeRequest) -> int:
    """How many seconds the sandbox takes to answer this request (`tok_slow_N`), else 0."""
    slow = _SLOW_N.fullmatch(request.token)
    return min(int(slow.group(1)), MAX_SLOW_SECONDS) if slow else 0


def _answer(
    request: ChargeRequest, recorded: tuple[str, str] | None
) -> ChargeResult | ProviderError:
    """The answer to a request the ledger took (or refused as in flight)."""
    if recorded is None:
        return OutcomeUnknown("sandbox: its ledger could not be reached; the charge may be made")
    charge_id, standing = recorded
    if standing == "in_flight":
        return RequestInFlight("sandbox: a request with this idempotency key is in flight")
    if request.token == "tok_timeout" and standing == "created":
        return OutcomeUnknown("sandbox: the charge was made but its answer was lost")
    return ChargeResult(status="succeeded", reference=charge_id)
