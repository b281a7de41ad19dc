"""Actors: thin, they load ids and call one service each."""

from __future__ import annotations

from typing import Any

import dramatiq
import psycopg2
import redis
from sqlalchemy.exc import InterfaceError, OperationalError

from app.bootstrap import QUEUES
from app.clock import utcnow
from app.jobs.runtime import container
from app.providers.errors import ProviderRateLimited, TransientProviderError
from app.services import charge, clocks, reconcile, refunds, renewals
from app.services.clocks import advance

_config = container().config
_POLICY = charge.RetryPolicy(
    _config.charge_max_retries, _config.charge_min_backoff_ms, _config.charge_max_backoff_ms
)
SKIPPED_FIRST_DELAY_MS = 1000
TENANT_BUSY_DELAY_MS = 1000


def _transient(retries: int, exc: BaseException) -> bool:
    """The one place that decides retries: only transient errors, a bounded number of times.

    Transient: the provider did not process the request, or our database or Redis blinked.
    Declines and lost answers are settled by the services and never raised here.
    """
    transient = (TransientProviderError, dramatiq.Retry, OperationalError, InterfaceError,
                 psycopg2.OperationalError, psycopg2.InterfaceError, redis.RedisError)
    return isinstance(exc, transient) and retries < _POLICY.max_retries


_RETRY: dict[str, Any] = {
    "max_retries": _POLICY.max_retries,
    "min_backoff": _POLICY.min_backoff_ms,
    "max_backoff": _POLICY.max_backoff_ms,
    "retry_when": _transient,
}


@dramatiq.actor(on_retry_exhausted="payment_retries_exhausted", **_RETRY)
def charge_payment(payment_id: str) -> None:
    """Charge one payment at its provider (at most once)."""
    c = container()
    try:
        charge.charge_payment(
            c.uow, c.providers, payment_id, lease_seconds=c.config.payment_lease_seconds
        )
    except ProviderRateLimited as exc:
        delay = _POLICY.wait_ms(exc)
        if delay is None:
            raise
        raise dramatiq.Retry(str(exc), delay=delay) from exc  # the provider's Retry-After


@dramatiq.actor(queue_name="default", **_RETRY)
def payment_retries_exhausted(
    message_data: dict[str, object], retry_info: dict[str, object]
) -> None:
    """Settle a payment whose retries ran out: failed if nothing can have been charged,
    else unknown (if this cannot run either, reconciliation finds the payment)."""
    args = message_data.get("args")
    assert isinstance(args, list)
    charge.give_up(container().uow, str(args[0]))


@dramatiq.actor(queue_name="default", **_RETRY)
def reconcile_payment(payment_id: str) -> None:
    """Settle an `unknown` payment from what the provider did."""
    c = container()
    reconcile.reconcile_payment(c.uow, c.providers, payment_id)


@dramatiq.actor(queue_name="default", **_RETRY)
def refund_payment(refund_id: str) -> None:
    """Send a refund to the provider."""
    c = container()
    refunds.process_refund(c.uow, c.providers, refund_id)


@dramatiq.actor(queue_name="default", **_RETRY)
def process_subscriptions(subscription_ids: list[str], requeues: int = 0) -> None:
    """Do whatever fell due for these subscriptions (renewals, retries, trial ends, ...)."""
    c = container()
    ran = renewals.run_due(c.uow, c.providers, subscription_ids, utcnow(),
                           lease_seconds=c.config.payment_lease_seconds)
    for payment_id in ran.to_retry:  # its own message retries it with backoff, then gives up
        c.enqueue("charge_payment", payment_id, delay_ms=c.config.charge_min_backoff_ms)
    delay_ms = SKIPPED_FIRST_DELAY_MS << requeues
    if ran.skipped and delay_ms < c.config.subscription_lease_seconds * 1000:
        # Held by a request or another worker just now: look again soon (1, 2, 4 ... s)
        # rather than only when the scheduler's claim lapses.
        c.enqueue("process_subscriptions", ran.skipped, requeues + 1, delay_ms=delay_ms)


@dramatiq.actor(queue_name=QUEUES["advance_test_clock"], time_limit=3_600_000, **_RETRY)
def advance_test_clock(clock_id: str) -> None:
    """Run everything due on a test clock up to its new frozen time, then mark it ready.

    On its own queue, and at most TEST_CLOCK_TENANT_CONCURRENCY clocks of a tenant at once:
    test keys cannot fill the threads that live renewals run on.
    """
    c = container()
    slots = c.config.test_clock_tenant_concurrency
    with clocks.driving(c.engine, clock_id, tenant_slots=slots) as drive:
        if drive is clocks.Drive.MINE:
            advance.advance_clock(c.uow, c.providers, clock_id,
                                  lease_seconds=c.config.payment_lease_seconds, retry=_POLICY)
        elif drive is clocks.Drive.TENANT_BUSY:  # its turn comes when one of them is done
            c.enqueue("advance_test_clock", clock_id, delay_ms=TENANT_BUSY_DELAY_MS)
