"""APScheduler jobs: thin, each claims a batch of due work in one unit of work.

Several schedulers may run at once: every claim uses SELECT ... FOR UPDATE SKIP LOCKED,
so each row is taken by one of them, and the actors are safe to receive twice anyway.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial, wraps
from types import FrameType

from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.exc import DBAPIError

from app.bootstrap import QUEUES, Container, build
from app.log import configure_logging
from app.models.uow import UnitOfWork
from app.scheduler import samples
from app.scheduler.queues import held_messages
from app.services import clocks, maintenance, reconcile, renewals
from app.telemetry import metrics
from app.webhooks import deliveries

log = logging.getLogger(__name__)
#: How long an advancing test clock goes between the scheduler's looks for its message: a
#: lost one costs seconds, not RECONCILE_STALE_SECONDS (a look reads the `clocks` queue).
CLOCK_LOOK_SECONDS = 5
#: A Dramatiq worker that sent Redis no command for this long is taken as dead: the clock
#: advances it fetched are lost (the generation voids them should it live after all).
WORKER_SILENT_MS = 5_000


def drain(claim: Callable[[UnitOfWork], int], container: Container, batch: int) -> None:
    """Claim batches, each in its own unit of work committed here (which sends what the
    claim enqueued), until a batch comes back short."""
    while True:
        with container.uow() as uow:
            claimed = claim(uow)
            uow.commit()
        if claimed < batch:
            return


def reconcile_job(container: Container) -> None:
    """Re-drive payments and refunds that a crash, lost message or lost answer left
    behind."""
    config = container.config
    drain(partial(reconcile.claim_stale_work, stale_seconds=config.reconcile_stale_seconds,
                  batch=config.reconcile_batch_size),
          container, config.reconcile_batch_size)


def clock_job(container: Container) -> None:
    """Send a new advance for each test clock whose advance message is lost: the broker
    holds none for it and nobody drives it (looked at every CLOCK_LOOK_SECONDS a clock)."""
    batch = container.config.reconcile_batch_size

    def held() -> set[clocks.Held]:
        messages = held_messages(container.redis, container.broker.namespace,
                                 QUEUES["advance_test_clock"], silent_ms=WORKER_SILENT_MS)
        return {advance for m in messages
                if (advance := clocks.held_advance(m["actor_name"], m["args"])) is not None}

    drain(partial(clocks.redrive_stalled, held=held, stale_seconds=CLOCK_LOOK_SECONDS,
                  batch=batch), container, batch)


def webhook_job(container: Container) -> None:
    """Wake the senders of webhook deliveries that are due and that nobody is sending."""
    config = container.config
    with container.uow() as uow:
        endpoints = deliveries.forgotten(uow.session, stale_seconds=config.reconcile_stale_seconds,
                                         limit=config.reconcile_batch_size)
    for endpoint_id in endpoints:
        container.enqueue("deliver_webhooks", endpoint_id)


def renewal_job(container: Container) -> None:
    """Enqueue every real-time subscription whose next event (renewal, retry, ...) is due."""
    config = container.config
    drain(partial(renewals.claim_due, batch=config.renewal_batch_size,
                  message_size=config.renewal_message_size,
                  lease_seconds=config.subscription_lease_seconds),
          container, config.renewal_batch_size)


def prune_job(container: Container) -> None:
    """Drop idempotency keys older than their retention."""
    with container.uow() as uow:
        maintenance.prune_idempotency_keys(uow, hours=container.config.idempotency_ttl_hours)
        uow.commit()


def build_scheduler(container: Container) -> BlockingScheduler:
    """The scheduler with every job, each run at most once at a time in this process, and
    each run as soon as the scheduler starts, then every interval: work that fell due while
    no scheduler ran (a deploy, a crash) is picked up at once, not an interval later."""
    scheduler = BlockingScheduler(timezone="UTC")
    config = container.config
    now = datetime.now(UTC)
    jobs: list[tuple[Callable[[Container], None], str, dict[str, float]]] = [
        (reconcile_job, "reconcile", {"seconds": config.reconcile_interval_seconds}),
        (webhook_job, "webhooks", {"seconds": config.reconcile_interval_seconds}),
        (renewal_job, "renewals", {"seconds": config.renewal_interval_seconds}),
        (clock_job, "clocks", {"seconds": config.renewal_interval_seconds}),
        (prune_job, "prune", {"minutes": 10}),
    ]
    for job, name, every in jobs:
        scheduler.add_job(_once_more_after_a_restart(job), "interval", args=[container],
                          id=name, next_run_time=now, max_instances=1, coalesce=True, **every)
    return scheduler


def _once_more_after_a_restart(job: Callable[[Container], None]) -> Callable[[Container], None]:
    """`job`, run once more at once when PostgreSQL had dropped the pooled connection it was
    given (a restart or failover since the pool last used it; SQLAlchemy then discards the
    pool's other connections too), instead of failing this run with an error logged. Every
    job is safe to run again: its batches commit one by one, and a claim takes only what is
    still due."""
    @wraps(job)
    def run(container: Container) -> None:
        try:
            job(container)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            job(container)

    return run


def main() -> None:
    """Run until SIGINT or SIGTERM."""
    container = build()
    configure_logging(container.config.log_level)
    scheduler = build_scheduler(container)
    metrics.sampler(partial(samples.sample, container))
    metrics.start("scheduler", container.config)
    metrics.serve(container.config.metrics_port)

    def _stop(signum: int, _: FrameType | None) -> None:
        # Only raise here: the handler runs on the main thread, possibly while it holds the
        # scheduler's wake-up lock, so calling shutdown() from here can deadlock.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("scheduler started")
    try:
        scheduler.start()
    except SystemExit:
        log.info("stopping scheduler")
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
