"""Charging payments at their provider: at most once, whatever crashes or retries happen.

A worker first *claims* payments (status compare-and-set plus a lease it owns) and records
each one's attempt, commits, then calls the provider with each attempt's idempotency key
while a heartbeat keeps its lease alive (app/services/lease.py), then settles every outcome
and its events in one more transaction. A worker that dies in between leaves `processing`
payments whose lease lapses; whoever claims one next re-sends the same attempt with the same
key, so the provider answers with the first charge instead of making another (or refuses
it as still in flight: outcome unknown). One payment is a batch of one: renewals charge
many at once through the same path. When two answers for one attempt meet, the one that
says money moved wins.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any, cast

from sqlalchemy import (
    CTE,
    ColumnElement,
    DateTime,
    Integer,
    Row,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    column,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Session

from app.billing.subscription_state import Status
from app.clock import utcnow
from app.events import outbox
from app.ids import DIGITS, id_stem, new_id
from app.models import (
    AttemptStatus,
    Base,
    Payment,
    PaymentAttempt,
    PaymentMethod,
    PaymentStatus,
    Provider,
    Subscription,
)
from app.models.payment import loaded, row_layout
from app.models.prepared import Prepared, autocommit
from app.models.uow import UnitOfWork, UnitOfWorkFactory
from app.providers.base import ChargeRequest, ChargeResult
from app.providers.errors import (
    OutcomeUnknown,
    PaymentDeclined,
    ProviderError,
    ProviderRateLimited,
    ProviderUnreachable,
    TransientProviderError,
)
from app.providers.registry import ProviderRegistry
from app.services import billing_cycle, failover, locks
from app.services.lease import Lease, kept_alive
from app.telemetry import metrics

log = logging.getLogger(__name__)
IN_FLIGHT = (AttemptStatus.PROCESSING, AttemptStatus.UNKNOWN)
FINAL = (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED)
#: Payments an outcome may still settle: being charged, lost, or waiting for the customer.
OPEN = (PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN, PaymentStatus.REQUIRES_ACTION)
#: An attempt's idempotency key at its provider is its payment's id, this, and its number:
#: made by the one-statement claim (SQL) and by `_current_attempt` alike.
KEY_SEPARATOR = ":"


@dataclass(frozen=True)
class Claim:
    provider: str
    request: ChargeRequest
    subscription_id: str | None
    #: The claim's lease, kept alive while the attempt is sent; None: not claimed to be sent
    #: (reconciliation's lookups, webhooks).
    lease: Lease | None = None
    #: The attempt was handed out before (a lapsed lease, reconciliation): an earlier send of
    #: it may have reached the provider.
    resent: bool = False


@dataclass(frozen=True)
class Outcome:
    """What became of one attempt, ready to be recorded."""

    claim: Claim
    status: AttemptStatus
    reference: str | None = None
    failure: tuple[str, str] | None = None
    redirect_url: str | None = None
    retry: bool = False  # a transient error: the payment stays processing for the next attempt
    hard: bool = False
    unreached: bool = False  # the request never reached the provider (may fail over)
    retry_after: float | None = None  # the provider's Retry-After, seconds

    @property
    def payment_id(self) -> str:
        return self.claim.request.payment_id


@dataclass(frozen=True)
class Mates:
    """Which other payments a claim takes along: up to `count` pending one-time payments
    of any tenant in the same mode (live or test), made or touched in the last
    `fresh_seconds` (older ones are left to reconciliation, whose re-drive makes them fresh
    again)."""

    count: int
    fresh_seconds: int


def charge_payments(
    uows: UnitOfWorkFactory,
    providers: ProviderRegistry,
    payment_ids: Sequence[str],
    *,
    lease_seconds: int,
    mates: Mates | None = None,
) -> list[Outcome]:
    """Claim, charge and settle these payments, together with `mates` (whose own messages
    then find them claimed and do nothing); returns the outcomes a transient error left to
    retry (`error_of` each)."""
    return charge_claimed(uows, providers, claim(uows, payment_ids, lease_seconds, mates))


def error_of(outcome: Outcome) -> TransientProviderError:
    """The transient error an outcome left to retry (ProviderRateLimited with the provider's
    Retry-After, when it gave one)."""
    message = outcome.failure[1] if outcome.failure else "transient"
    if outcome.retry_after is not None:
        return ProviderRateLimited(message, outcome.retry_after)
    return TransientProviderError(message)


def charge_claimed(
    uows: UnitOfWorkFactory, providers: ProviderRegistry, claims: Sequence[Claim]
) -> list[Outcome]:
    """Send claimed attempts to their providers and settle them, together.

    Returns the outcomes of transient errors: those payments stay `processing`, with no
    lease, for the caller to retry (a new attempt) or give up on (`give_up`).
    """
    held = [(c.lease, c.request.payment_id) for c in claims if c.lease is not None]
    with kept_alive(uows, held):
        outcomes = _call_all(providers, claims)
        if outcomes:
            settle(uows, outcomes)
    return [outcome for outcome in outcomes if outcome.retry]


def void_claimed(
    uows: UnitOfWorkFactory, providers: ProviderRegistry, claims: Sequence[Claim]
) -> None:
    """Stop attempts that wait for their customer (`waiting_claims`) and settle each: failed
    `payment_expired`, or succeeded if the customer finished just before. One whose provider
    could not say is left as it is, for its subscription's next due run to try again."""
    outcomes = [o for o in (_void(providers, claim) for claim in claims) if o is not None]
    if outcomes:
        settle(uows, outcomes)


def _void(providers: ProviderRegistry, claim: Claim) -> Outcome | None:
    request = claim.request
    try:
        found = providers.call(claim.provider, request.tenant_id, lambda p: p.cancel(request),
                               livemode=request.livemode)
    except ProviderError as exc:
        log.warning("could not stop a waiting payment; will try again",
                    extra={"payment_id": request.payment_id, "error": exc.code})
        return None
    if found is not None:
        return _outcome(claim, found)
    return Outcome(claim, AttemptStatus.FAILED, reference=request.reference,
                   failure=billing_cycle.PAYMENT_EXPIRED, hard=True)


def settle_result(uows: UnitOfWorkFactory, claim: Claim, result: ChargeResult) -> None:
    """Record what the provider did with an attempt that reconciliation looked up."""
    settle(uows, [_outcome(claim, result)])


def give_up(uows: UnitOfWorkFactory, payment_id: str) -> None:
    """Settle a payment whose retries ran out (the provider, or our database, stayed down).

    `failed` only when every attempt is known not to have charged (a recorded decline or
    a refusal before any charge); an attempt that may have been sent makes it `unknown`,
    for reconciliation to settle from the provider's word.
    """
    with uows() as uow:
        found = uow.session.get(Payment, payment_id)
        if found is None:
            return
        locked = locks.lock(uow.session, subscription_ids=[found.subscription_id],
                            payment_ids=[payment_id])
        payment = locked.payments[payment_id]
        if payment.status is not PaymentStatus.PROCESSING:
            return
        if payment.lease_until is not None and payment.lease_until > utcnow():
            return
        payment.lease_until = payment.lease_owner = None
        sent = [a for a in payment.attempts if a.status in IN_FLIGHT]
        if sent:
            for attempt in sent:
                attempt.status = AttemptStatus.UNKNOWN
            payment.status = PaymentStatus.UNKNOWN
            log.warning("retries ran out with an attempt that may have been sent: unknown",
                        extra={"payment_id": payment.id})
            uow.commit()
            _count_settled(sent[-1].provider, payment.livemode, "unknown")
            return
        payment.status = PaymentStatus.FAILED
        payment.failure_code = "provider_unavailable"
        payment.failure_message = "The payment provider could not be reached; nothing was charged."
        outbox.record_payment(uow.session, "payment.failed", payment)
        billing_cycle.on_payment_settled(uow.session, payment)
        uow.commit()
    if payment.attempts:
        _count_settled(payment.attempts[-1].provider, payment.livemode, "failed")


def claim_of(payment: Payment | Row[Any], method: PaymentMethod | Row[*tuple[Any, ...]],
             attempt: PaymentAttempt, *,
             signing_up: bool = False, lease: Lease | None = None,
             resent: bool = False) -> Claim:
    """The provider request of one attempt; the same attempt always yields the same key.

    Subscription payments are charged off-session (the customer is not there), except the
    first one while the customer signs up (`signing_up`: its subscription is `incomplete`),
    which may ask for 3-D Secure, as a one-time payment does.
    """
    request = ChargeRequest(
        tenant_id=payment.tenant_id,
        livemode=payment.livemode,
        payment_id=payment.id,
        attempt=attempt.number,
        idempotency_key=attempt.idempotency_key,
        amount=payment.amount,
        currency=payment.currency,
        token=method.token,
        off_session=payment.subscription_id is not None and not signing_up,
        description=payment.description,
        reference=attempt.provider_reference,
    )
    return Claim(provider=attempt.provider, request=request,
                 subscription_id=payment.subscription_id, lease=lease, resent=resent)


def claim(uows: UnitOfWorkFactory, payment_ids: Sequence[str], lease_seconds: int,
          mates: Mates | None = None) -> list[Claim]:
    """Claim these payments (waiting for a transaction that holds one), then up to
    `mates.count` other fresh pending one-time payments that no transaction holds, and
    record each one's attempt: one statement, in autocommit (one round trip, atomic), that
    returns each payment with its method and the attempt to send."""
    now = utcnow()
    lease = Lease.new(lease_seconds)
    count = mates.count if mates is not None else 0
    values = {"ids": list(payment_ids), "now": now, "owner": lease.owner,
              "until": now + timedelta(seconds=lease_seconds), "count": count,
              "fresh": now - timedelta(seconds=mates.fresh_seconds if mates else 0),
              "attempt_stem": id_stem("att")}
    with uows().engine.connect() as connection, autocommit(connection.connection):
        return [_claim_of(row, lease) for row in _claiming().execute(connection, values)]


def _claim_of(row: Row[Any], lease: Lease) -> Claim:
    """The claim of one row `_claiming` returned: a new attempt, or one sent before."""
    attempt = PaymentAttempt(number=row.number, provider=row.attempt_provider,
                             idempotency_key=row.idempotency_key,
                             provider_reference=row.provider_reference)
    return claim_of(row, row, attempt, lease=lease, resent=not row.new,
                    signing_up=bool(row.signing_up))


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


@functools.cache
def _claiming() -> Prepared:
    """The statement that claims the payments named (`ids`), then up to `count` pending
    one-time payments in their mode touched since `fresh` that no transaction holds, for
    the lease `owner` until `until`; records a new attempt (its id: `attempt_stem` and its
    row's two digits) for each one whose last attempt is not in flight (as
    `_current_attempt` does), and returns each with its method and the attempt to send.
    Built once, and prepared: building and hashing it took as long as running it, and so
    did planning it."""
    payments, attempts = _table(Payment).c, _table(PaymentAttempt).c
    now = bindparam("now", type_=DateTime(timezone=True))
    ids = any_(bindparam("ids", type_=ARRAY(String)))

    def claiming(*which: ColumnElement[bool], name: str) -> CTE:
        return (
            update(_table(Payment))
            .where(*which)
            .values(status=PaymentStatus.PROCESSING,
                    lease_until=bindparam("until", type_=DateTime(timezone=True)),
                    lease_owner=bindparam("owner", type_=String), updated_at=now)
            .returning(payments.id, payments.tenant_id, payments.livemode, payments.amount,
                       payments.currency, payments.description, payments.subscription_id,
                       payments.payment_method_id)
            .cte(name)
        )

    # Claimable: pending, or processing with its lease run out. Written as a CASE, which
    # PostgreSQL cannot match to ix_payments_unsettled's predicate: the plain OR lets it
    # AND that index (every unsettled row version since the last vacuum: 32,494 entries
    # in bench/pay.py, 2-4 ms a claim) with the primary key lookup.
    claimable = case((payments.status == PaymentStatus.PENDING, true()),
                     (payments.status == PaymentStatus.PROCESSING,
                      or_(payments.lease_until.is_(None), payments.lease_until < now)),
                     else_=false())
    named = claiming(payments.id == ids, claimable, name="named")
    other = _table(Payment).alias("other")
    chosen = (
        select(payments.id)
        .where(payments.status == PaymentStatus.PENDING,
               payments.subscription_id.is_(None),
               payments.updated_at > bindparam("fresh", type_=DateTime(timezone=True)),
               ~(payments.id == ids),
               # Test traffic never rides with live payments, nor waits for them.
               payments.livemode.in_(select(other.c.livemode).where(other.c.id == ids)),
               # Only once the named ones are claimed (a one-time filter, run before the
               # scan): a claim waits for a row only while it holds none, so two claims
               # never wait for each other in a cycle.
               select(func.count()).select_from(named).scalar_subquery() >= 0)
        .order_by(payments.updated_at)
        .limit(bindparam("count", type_=Integer))
        .with_for_update(skip_locked=True)
        # Materialized: run once. As a subquery of the UPDATE, PostgreSQL may run it again
        # for each row (a rescan), and each run, skipping the rows the last one locked, takes
        # `count` more (bench/pay.py saw one claim take 195, then wait out the lock timeout).
        .cte("chosen")
        .prefix_with("MATERIALIZED")
    )
    # An ARRAY of ids (an InitPlan) looked up in the primary key, whatever the estimates.
    # No status test: `chosen` locked each row, rechecking it was pending, and holds it.
    mates = claiming(payments.id == any_(func.array(select(chosen.c.id).scalar_subquery())),
                     name="mates")
    claimed = union_all(select(named), select(mates)).cte("claimed")
    last = (
        select(attempts.number, attempts.status, attempts.provider, attempts.idempotency_key,
               attempts.provider_reference)
        .where(attempts.payment_id == claimed.c.id)
        .order_by(attempts.number.desc())
        .limit(1)
        .lateral("last")
    )
    methods, subscriptions = _table(PaymentMethod).c, _table(Subscription).c
    found = (
        select(claimed, methods.token, methods.provider.label("method_provider"),
               last.c.number, last.c.status, last.c.provider, last.c.idempotency_key,
               last.c.provider_reference,
               # The customer is there while the subscription signs up (see claim_of).
               (subscriptions.status == Status.INCOMPLETE).label("signing_up"))
        .select_from(claimed)
        .join(_table(PaymentMethod), methods.id == claimed.c.payment_method_id)
        .outerjoin(last, true())
        .outerjoin(_table(Subscription), subscriptions.id == claimed.c.subscription_id)
        .cte("found")
    )
    # A new attempt unless the last one is in flight (a crash or lost answer: sent again).
    number = func.coalesce(found.c.number, 0) + 1
    # 1 to CHARGE_BATCH_SIZE (below 1024: two digits)
    row = cast_(func.row_number().over(order_by=found.c.id), Integer)
    digits = literal(DIGITS)
    attempt_id = (bindparam("attempt_stem", type_=String)
                  + func.substr(digits, row.op(">>")(5) + 1, 1)
                  + func.substr(digits, row.op("&")(31) + 1, 1))
    made = (
        insert(_table(PaymentAttempt))
        .from_select(
            ["id", "payment_id", "number", "status", "provider", "idempotency_key",
             "created_at", "updated_at"],
            select(attempt_id, found.c.id,
                   number, literal(AttemptStatus.PROCESSING.value),
                   found.c.method_provider, found.c.id + KEY_SEPARATOR + cast_(number, String),
                   now, now)
            .where(or_(found.c.number.is_(None),
                       and_(*(found.c.status != status for status in IN_FLIGHT)))))
        .returning(attempts.payment_id, attempts.number, attempts.provider,
                   attempts.idempotency_key)
        .cte("made")
    )
    return Prepared("charge_claim", select(
               found.c.id, found.c.tenant_id, found.c.livemode, found.c.amount,
               found.c.currency, found.c.description, found.c.subscription_id,
               found.c.token, found.c.signing_up,
               func.coalesce(made.c.number, found.c.number).label("number"),
               func.coalesce(made.c.provider, found.c.provider).label("attempt_provider"),
               func.coalesce(made.c.idempotency_key, found.c.idempotency_key
                             ).label("idempotency_key"),
               # A new attempt has no reference yet; one sent again keeps its own.
               case((made.c.payment_id.is_(None), found.c.provider_reference)
                    ).label("provider_reference"),
               made.c.payment_id.is_not(None).label("new"))
        .select_from(found)
        .outerjoin(made, made.c.payment_id == found.c.id)
        .order_by(found.c.id))


def claim_held(uow: UnitOfWork, payments: Sequence[Payment], lease_seconds: int) -> list[Claim]:
    """Claim pending payments this transaction created or locked, as `claim` would.

    Renewals create their payments and claim them in one transaction: the same rows as a
    separate claim would leave (processing, leased, attempt recorded), a transaction and
    re-reading every payment fewer. Charge them with `charge_claimed` after commit.
    """
    now = utcnow()
    lease = Lease.new(lease_seconds)
    pending = sorted((p for p in payments if p.status is PaymentStatus.PENDING), key=_by_id)
    for payment in pending:
        payment.status = PaymentStatus.PROCESSING
        payment.lease_until = now + timedelta(seconds=lease_seconds)
        payment.lease_owner = lease.owner
        payment.updated_at = now
    # Renewals, retries: the customer is not there.
    return _attempts(uow, pending, lease, now)


def waiting_claims(session: Session, payments: Sequence[Payment]) -> list[Claim]:
    """The claims of payments waiting for their customer, for `void_claimed` after commit."""
    methods = _methods(session, payments)
    return [claim_of(p, methods[p.payment_method_id], p.attempts[-1])
            for p in sorted(payments, key=_by_id)]


def _methods(session: Session,
             payments: Sequence[Payment]) -> dict[str, Row[str, Provider, str]]:
    """The provider and token of each payment's method: plain rows, not 200 ORM objects
    a renewal message."""
    if not payments:
        return {}
    with session.no_autoflush:  # what the transaction changed goes in once, at the commit
        return {m.id: m for m in session.execute(
            select(PaymentMethod.id, PaymentMethod.provider, PaymentMethod.token)
            .where(PaymentMethod.id.in_({p.payment_method_id for p in payments})))}


def _by_id(payment: Payment) -> str:
    return payment.id


def _attempts(uow: UnitOfWork, payments: Sequence[Payment], lease: Lease,
              now: datetime) -> list[Claim]:
    """The attempt to send for each claimed payment, inserted at the commit."""
    methods = _methods(uow.session, payments)
    claims = []
    for payment in payments:
        method = methods[payment.payment_method_id]
        last = payment.attempts[-1] if payment.attempts else None
        attempt, resent = _current_attempt(payment.id, last, method.provider.value, now)
        if not resent:
            payment.attempts.append(attempt)  # read only: for this transaction's events
            uow.insert(attempt)
        claims.append(claim_of(payment, method, attempt, lease=lease, resent=resent))
    return claims


def _current_attempt(
    payment_id: str, last: PaymentAttempt | None, provider: str, now: datetime
) -> tuple[PaymentAttempt, bool]:
    """The payment's last attempt if a crash or lost answer left it in flight (True: sent
    before), else a new one for the caller to record (made `now`, when claimed)."""
    if last is not None and last.status in IN_FLIGHT:
        return last, True
    number = last.number + 1 if last else 1
    attempt = PaymentAttempt(
        id=new_id("att"),
        payment_id=payment_id,
        number=number,
        status=AttemptStatus.PROCESSING,
        provider=provider,
        idempotency_key=f"{payment_id}{KEY_SEPARATOR}{number}",
        created_at=now,
        updated_at=now,
    )
    return attempt, False


def _call_all(providers: ProviderRegistry, claims: Sequence[Claim]) -> list[Outcome]:
    """Send the claims to their providers, one batch per provider, tenant and mode, the
    batches at once: one provider's slowness does not hold back another's calls."""
    batches: dict[tuple[str, str, bool], list[int]] = {}
    for index, claim in enumerate(claims):
        request = claim.request
        batches.setdefault((claim.provider, request.tenant_id, request.livemode), []
                           ).append(index)

    def send(batch: tuple[tuple[str, str, bool], list[int]]) -> list[Outcome]:
        (provider, tenant_id, livemode), indexes = batch
        results = providers.charge_many(provider, tenant_id, livemode,
                                        [claims[i].request for i in indexes])
        return [_outcome_of(claims[i], result)
                for i, result in zip(indexes, results, strict=True)]

    if len(batches) < 2:
        return [outcome for batch in batches.items() for outcome in send(batch)]
    with ThreadPoolExecutor(len(batches), "provider-batch") as pool:
        return [outcome for sent in pool.map(send, batches.items()) for outcome in sent]


def _outcome_of(claim: Claim, result: ChargeResult | ProviderError) -> Outcome:
    if not isinstance(result, ProviderError):
        return _outcome(claim, result)
    if isinstance(result, PaymentDeclined):
        return Outcome(claim, AttemptStatus.FAILED, failure=(result.code, result.message),
                       hard=result.hard)
    if isinstance(result, OutcomeUnknown):
        return Outcome(claim, AttemptStatus.UNKNOWN, reference=result.reference)
    if isinstance(result, TransientProviderError):
        return Outcome(claim, AttemptStatus.FAILED, failure=(result.code, str(result)),
                       retry=True, unreached=isinstance(result, ProviderUnreachable),
                       retry_after=result.retry_after
                       if isinstance(result, ProviderRateLimited) else None)
    return Outcome(claim, AttemptStatus.FAILED, failure=(result.code, str(result)), hard=True)


def _outcome(claim: Claim, result: ChargeResult) -> Outcome:
    if result.status == "succeeded":
        return Outcome(claim, AttemptStatus.SUCCEEDED, reference=result.reference)
    return Outcome(claim, AttemptStatus.REQUIRES_ACTION, redirect_url=result.redirect_url)


def settle(uows: UnitOfWorkFactory, outcomes: Sequence[Outcome]) -> None:
    """Record attempts' outcomes, payments' new statuses and their events, once, together.

    A batch of one-time payments is settled by one statement (`_settling`) wherever its
    common case holds (the payment being charged, its attempt in flight, an answer that
    ends it or waits for the customer); every other outcome, and a batch with a
    subscription's payment, by `_record` through the ORM, in the same transaction. Locks go
    subscriptions first, then payments, each in id order (app/services/locks.py).
    """
    with uows() as uow:
        session = uow.session
        rest: Sequence[Outcome] = outcomes
        if all(o.claim.subscription_id is None for o in outcomes):
            rest = _settle_one_time(session, outcomes)
        if rest:
            locked = locks.lock(session,
                                subscription_ids=[o.claim.subscription_id for o in rest],
                                payment_ids=[o.payment_id for o in rest])
            for outcome in rest:
                _record(session, locked.payments[outcome.payment_id], outcome)
        uow.commit()
    for outcome in outcomes:
        if not outcome.retry and outcome.status is not AttemptStatus.PROCESSING:
            _count_settled(outcome.claim.provider, outcome.claim.request.livemode,
                           outcome.status.value)


#: The answers `_settling` records: each ends its payment, or makes it wait for the customer.
PLAIN = (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.REQUIRES_ACTION)


def _settle_one_time(session: Session, outcomes: Sequence[Outcome]) -> list[Outcome]:
    """Settle one-time payments' plain outcomes in one statement, which locks the batch's
    payments in id order (those it reads: any left are the highest ids, which `_record`'s
    lock takes after); records their events (each payment rendered from what the statement
    returned). Returns the outcomes it did not settle, for `_record`: those of another kind,
    and those it found settled already, or not in the state it expects."""
    plain = [o for o in outcomes if _plain(o)]
    ids = [o.payment_id for o in plain]
    if not plain or len(set(ids)) < len(ids):
        return list(outcomes)
    values = {
        "locked": sorted({o.payment_id for o in outcomes}), "ids": ids,
        "keys": [o.claim.request.idempotency_key for o in plain],
        "statuses": [o.status.value for o in plain],
        "references": [o.reference or None for o in plain],
        "failure_codes": [o.failure[0] if o.failure else None for o in plain],
        "failure_messages": [o.failure[1] if o.failure else None for o in plain],
        "next_actions": [json.dumps(_next_action(o)) for o in plain],  # none: JSON null
        "now": utcnow(),
    }
    rows = _settling().rows(session.connection(), values)
    by_id = operator.itemgetter(row_layout()[0].index("id"))
    settled = {payment_id: loaded(list(group)) for payment_id, group in groupby(rows, by_id)}
    for payment in settled.values():
        outbox.record_payment(session, f"payment.{payment.status.value}", payment)
    return [o for o in outcomes if not (_plain(o) and o.payment_id in settled)]


def _plain(outcome: Outcome) -> bool:
    return outcome.status in PLAIN and not outcome.retry


def _next_action(outcome: Outcome) -> dict[str, Any] | None:
    """What the customer must do next, if anything (API.md: the payment's next_action)."""
    if outcome.redirect_url:
        return {"type": "redirect_to_url", "redirect_url": outcome.redirect_url}
    return None


@functools.cache
def _settling() -> Prepared:
    """The statement that locks the payments `locked` in id order, then records the outcome
    of each payment of `ids` (its attempt's idempotency key in `keys`, and so on) whose
    payment is processing and whose attempt is still in flight as sent (`_record`'s rules
    for that case, where every answer is news): the attempt's status, reference and
    failure code, the payment's status, failure and next action, its lease ended; returns
    each settled payment with every attempt, one row each, as they are now, laid out as
    `loaded` takes them."""
    payments, attempts = _table(Payment).c, _table(PaymentAttempt).c
    payment_fields, attempt_fields = row_layout()
    changed = ("status", "provider_reference", "failure_code", "updated_at")  # in an attempt
    now = bindparam("now", type_=DateTime(timezone=True))
    locked = (
        select(payments.id, payments.status)
        .where(payments.id == any_(bindparam("locked", type_=ARRAY(String))))
        .order_by(payments.id)
        .with_for_update()
        .cte("locked")
        .prefix_with("MATERIALIZED")
    )
    names = ("ids", "keys", "statuses", "references", "failure_codes", "failure_messages",
             "next_actions")
    outcome = (
        func.unnest(*(bindparam(name, type_=ARRAY(String)) for name in names))
        .table_valued(*(column(name, String) for name in (
            "payment_id", "key", "status", "reference", "failure_code", "failure_message",
            "next_action")))
        .render_derived(name="outcome")
    )
    attempt = (
        update(_table(PaymentAttempt))
        .where(attempts.payment_id == outcome.c.payment_id,
               attempts.idempotency_key == outcome.c.key,
               attempts.status == AttemptStatus.PROCESSING,
               locked.c.id == outcome.c.payment_id,
               locked.c.status == PaymentStatus.PROCESSING)
        .values(status=outcome.c.status,
                provider_reference=func.coalesce(outcome.c.reference,
                                                 attempts.provider_reference),
                failure_code=outcome.c.failure_code, updated_at=now)
        .returning(attempts.id, attempts.payment_id, *(attempts[name] for name in changed),
                   outcome.c.failure_message, outcome.c.next_action)
        .cte("attempt")
    )
    paid = (
        update(_table(Payment))
        .where(payments.id == attempt.c.payment_id)
        .values(status=attempt.c.status, failure_code=attempt.c.failure_code,
                failure_message=attempt.c.failure_message,
                next_action=cast_(attempt.c.next_action, JSONB),
                lease_until=null(), lease_owner=null(), updated_at=now)
        .returning(*(getattr(Payment, field) for field in payment_fields),
                   *(attempt.c[name].label(f"attempt_{name}") for name in ("id", *changed)))
        .cte("paid")
    )
    # Rows as `loaded` takes them; the attempt the statement changed as it is now (the
    # table shows its old row).
    payment_columns = list(paid.c)[:len(payment_fields)]
    mine = attempts.id == paid.c.attempt_id
    return Prepared("charge_settle", select(
               *payment_columns,
               *(case((mine, paid.c[f"attempt_{field}"]), else_=attempts[field]).label(field)
                 if field in changed else attempts[field] for field in attempt_fields))
        .select_from(paid)
        .join(_table(PaymentAttempt), attempts.payment_id == paid.c.id)
        .order_by(paid.c.id, attempts.number))


def _count_settled(provider: str, livemode: bool, outcome: str) -> None:
    """PaymentsSettled, once the settling transaction has committed."""
    metrics.count("PaymentsSettled", Provider=provider, Mode="live" if livemode else "test",
                  Outcome=outcome)


def _record(session: Session, payment: Payment, outcome: Outcome) -> None:
    key = outcome.claim.request.idempotency_key
    attempt = next((a for a in payment.attempts if a.idempotency_key == key), None)
    if attempt is None or not _news(payment, attempt, outcome):
        log.info("outcome already settled", extra={"payment_id": payment.id})
        return
    if payment.status is PaymentStatus.SUCCEEDED:  # another attempt charged as well
        attempt.status, attempt.provider_reference = outcome.status, outcome.reference
        log.error("a second attempt of a succeeded payment charged: refund one",
                  extra={"payment_id": payment.id, "attempt": attempt.number})
        return
    if payment.status is PaymentStatus.FAILED:  # money moved after all: the charge stands
        log.error("a success settles a payment recorded failed",
                  extra={"payment_id": payment.id, "attempt": attempt.number})
    status = outcome.status
    attempt.status = status
    attempt.provider_reference = outcome.reference or attempt.provider_reference
    attempt.failure_code = outcome.failure[0] if outcome.failure else None
    attempt.updated_at = utcnow()
    payment.lease_until = payment.lease_owner = None
    if outcome.retry_after:  # nobody re-drives it before the provider said (Retry-After)
        payment.lease_until = utcnow() + timedelta(seconds=outcome.retry_after)
    if outcome.retry:
        if _unreached(payment, outcome):
            failover.fail_over(session, payment, outcome.claim.provider)
        return  # stays processing; the actor's retry makes the next attempt
    if status is AttemptStatus.UNKNOWN:
        payment.status = PaymentStatus.UNKNOWN
        return
    payment.status = PaymentStatus(status.value)
    payment.failure_code, payment.failure_message = outcome.failure or (None, None)
    payment.next_action = _next_action(outcome)
    outbox.record_payment(session, f"payment.{status.value}", payment)
    billing_cycle.on_payment_settled(session, payment, hard=outcome.hard)


def _news(payment: Payment, attempt: PaymentAttempt, outcome: Outcome) -> bool:
    """Whether this outcome tells more than what is recorded.

    An attempt still in flight takes any outcome (of an open payment); one waiting for its
    customer takes a final one; and a success is news about any attempt not recorded as
    succeeded (an earlier in-flight conflict, a lost answer, a give-up): money moved.
    """
    if outcome.status is AttemptStatus.SUCCEEDED:
        return attempt.status is not AttemptStatus.SUCCEEDED
    if payment.status not in OPEN:
        return False
    if attempt.status is AttemptStatus.REQUIRES_ACTION:
        return outcome.status in FINAL
    return attempt.status in IN_FLIGHT


def _unreached(payment: Payment, outcome: Outcome) -> bool:
    """Whether no attempt of the payment can have reached any provider: this one never left
    (refused connection, open breaker) and was never sent before, and every other one is
    known not to have charged."""
    return (outcome.unreached and not outcome.claim.resent
            and all(a.status is AttemptStatus.FAILED for a in payment.attempts))
