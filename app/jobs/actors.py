"""Actors: thin, they load ids and call one service each.

Their retries are the broker's Retries middleware, configured once in the composition root
(`Container.retries`): transient errors only, with exponential backoff and jitter.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage

from app.bootstrap import QUEUES, Container
from app.clock import utcnow
from app.jobs.runtime import container
from app.providers.errors import ProviderRateLimited, TransientProviderError
from app.services import charge, charge_window, clocks, reconcile, refunds, renewals
from app.services.clocks import advance

SKIPPED_FIRST_DELAY_MS = 1000
TENANT_BUSY_DELAY_MS = 1000
#: A clock waiting for payments other workers are charging looks again after 50 ms, then
#: twice as long each time, at most every half second: soon after they settle, without
#: running its advance 20 times a second through a long charge (tok_slow_60).
CLOCK_WAIT_FIRST_MS = 50
CLOCK_WAIT_MAX_MS = 500


@dramatiq.actor(on_retry_exhausted="payment_retries_exhausted")
def charge_payment(payment_id: str) -> None:
    """Charge one payment at its provider (at most once), in one batch with others.

    A message younger than CHARGE_LINGER_MS joins its process's open window
    (app/services/charge_window.py): when the window ends, its first message claims every
    payment the window's messages name (no mates), and charges and settles them; the
    others are done once that claim is made. A message taken late (under load, a retry, or
    lingering off) claims at once its own payment and up to CHARGE_BATCH_SIZE - 1 other
    pending one-time payments, its mates: their own messages then find them claimed and
    do nothing.
    """
    c = container()
    message = CurrentMessage.get_current_message()
    joined = _window.join(payment_id, message.message_timestamp / 1000 if message else None,
                          c.config.charge_linger_ms / 1000, c.config.charge_batch_size)
    if joined is None:
        claims = _claim(c, [payment_id], with_mates=True)
    elif joined.leads:
        claims = joined.claim(lambda payment_ids: _claim(c, payment_ids, with_mates=False))
    else:
        joined.wait()  # the lead's batch finishes this payment
        return
    retry = charge.charge_claimed(c.uow, c.providers, claims)
    for outcome in retry:  # the others': a message of their own retries each, as renewals'
        if outcome.payment_id != payment_id:
            wait = _held_ms(charge.error_of(outcome)) or c.config.charge_min_backoff_ms
            c.enqueue("charge_payment", outcome.payment_id, delay_ms=wait)
    for outcome in retry:
        if outcome.payment_id == payment_id:
            error = charge.error_of(outcome)
            delay = _held_ms(error)
            if delay is None:
                raise error
            raise dramatiq.Retry(str(error), delay=delay) from error  # the provider's Retry-After


def _claim(c: Container, payment_ids: list[str], *, with_mates: bool) -> list[charge.Claim]:
    """Claim these payments, and with mates up to CHARGE_BATCH_SIZE minus their number.

    Only a message taken late (the fleet is behind: other payments wait for it) looks for
    mates. A window's claim takes none: the window already batches what arrived meanwhile,
    the search would mostly find nothing (and take the other process's window's payments
    when it did), and its scan costs the database more than the rest of the claim.
    """
    mates = charge.Mates(c.config.charge_batch_size - len(payment_ids) if with_mates else 0,
                         c.config.reconcile_stale_seconds)
    return charge.claim(c.uow, payment_ids, c.config.payment_lease_seconds, mates)


_window = charge_window.Window()


def _held_ms(error: TransientProviderError) -> int | None:
    """How long the provider asked us to wait (its Retry-After); None: the backoff decides."""
    if isinstance(error, ProviderRateLimited):
        return container().retry_after_ms(error)
    return None


@dramatiq.actor(queue_name="default")
def payment_retries_exhausted(
    message_data: dict[str, object], retry_info: dict[str, object]
) -> None:
    """Settle a payment whose retries ran out: failed if nothing can have been charged,
    else unknown (if this cannot run either, reconciliation finds the payment)."""
    args = message_data.get("args")
    assert isinstance(args, list)
    charge.give_up(container().uow, str(args[0]))


@dramatiq.actor(queue_name="default")
def reconcile_payment(payment_id: str) -> None:
    """Settle an `unknown` payment from what the provider did."""
    c = container()
    reconcile.reconcile_payment(c.uow, c.providers, payment_id)


@dramatiq.actor(queue_name="default")
def refund_payment(refund_id: str) -> None:
    """Send a refund to the provider."""
    c = container()
    refunds.process_refund(c.uow, c.providers, refund_id)


@dramatiq.actor(queue_name="default")
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


@dramatiq.actor(queue_name=QUEUES["advance_test_clock"], time_limit=3_600_000,
                on_retry_exhausted="clock_retries_exhausted")
def advance_test_clock(clock_id: str, waits: int = 0, generation: int | None = None) -> None:
    """Run everything due on a test clock up to its new frozen time, then mark it ready;
    retried (dramatiq.Retry: logged as a retry, counted as one) while its payments are not
    settled (ClockUnsettled).

    While it only waits for payments other workers are charging (ClockWaiting), it is sent
    again as a new message `waits` + 1, after CLOCK_WAIT_FIRST_MS doubled `waits` times (at
    most CLOCK_WAIT_MAX_MS): waiting for others draws on none of its retries, which stay for
    its own payments' transient errors (1 + CHARGE_MAX_RETRIES attempts each). Every message
    that goes on with an advance carries its `generation`; one the scheduler replaced
    because it looked lost (`clocks.redrive_stalled`) is void.

    On its own queue, and at most TEST_CLOCK_TENANT_CONCURRENCY clocks of a tenant at once:
    test keys cannot fill the threads that live renewals run on.
    """
    c = container()
    slots = c.config.test_clock_tenant_concurrency
    later: tuple[int, int] | None = None  # the next message's `waits` and delay
    with clocks.driving(c.engine, clock_id, tenant_slots=slots, generation=generation) as drive:
        if drive is clocks.Drive.MINE:
            try:
                advance.advance_clock(c.uow, c.providers, clock_id,
                                      lease_seconds=c.config.payment_lease_seconds)
            except advance.ClockWaiting:
                later = waits + 1, min(CLOCK_WAIT_FIRST_MS << min(waits, 10), CLOCK_WAIT_MAX_MS)
            except advance.ClockUnsettled as exc:
                raise dramatiq.Retry(str(exc)) from exc  # the backoff decides
        elif drive is clocks.Drive.TENANT_BUSY:  # its turn comes when one of them is done
            later = 0, TENANT_BUSY_DELAY_MS
    if later is not None:  # once the clock's lock is free: the message cannot find it taken
        c.enqueue("advance_test_clock", clock_id, later[0], generation, delay_ms=later[1])


@dramatiq.actor(queue_name=QUEUES["clock_retries_exhausted"])
def clock_retries_exhausted(
    message_data: dict[str, object], retry_info: dict[str, object]
) -> None:
    """An advance's retries ran out: settle its payments as real time would (failed, or
    unknown if they may have been charged), then advance the clock again, its retries anew.

    After an error that is not transient nothing is done here: the clock stays advancing,
    the broker holds no message for it, and the scheduler sends a new one
    (`clocks.redrive_stalled`).
    """
    args = message_data.get("args")
    assert isinstance(args, list)
    retries, limit = retry_info.get("retries"), retry_info.get("max_retries")
    if not isinstance(retries, int) or not isinstance(limit, int) or retries < limit:
        return
    c = container()
    advance.give_up(c.uow, str(args[0]))
    c.enqueue("advance_test_clock", str(args[0]), 0, *args[2:])  # in its generation
