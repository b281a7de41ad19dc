"""A PostgreSQL outage longer than the retry window, in the middle of a charge.

The engine (API, worker fleet, scheduler) runs on a PostgreSQL cluster of this test's own
(bench/procs.py: initdb on a free port; the machine's is never touched) with a 2 s lease.
A `tok_slow_3` payment is charged by the sandbox as the request arrives; the database goes
down before the answer comes and stays down far longer than the worker's retries last.
Nothing says the charge failed, so the payment must never be `failed`: it ends `succeeded`,
charged once, when the database is back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from app.config import Config
from app.models.database import ensure_database, migrate
from tests.e2e.stack import Stack
from tests.servers import Cluster, remove
from tests.support import eventually

pytestmark = pytest.mark.e2e
SLOW = 3
OUTAGE_SECONDS = 6.0  # the worker's retries (3, 20..200 ms apart) are over long before
#: Reconciliation steps in later than whatever runs when the worker's retries are over
#: (Dramatiq retries a failing on_retry_exhausted actor 15-30 s later by default).
STALE_SECONDS = 40


@pytest.fixture()
def own_postgres() -> Iterator[Cluster]:
    server = Cluster.primary()
    try:
        yield server
    finally:
        remove(server)


@pytest.fixture()
def outage_stack(config: Config, own_postgres: Cluster,
                 tmp_path: Path) -> Iterator[Stack]:
    own = replace(config, database_url=own_postgres.url("se"), payment_lease_seconds=2,
                  reconcile_stale_seconds=STALE_SECONDS,
                  redis_namespace=f"{config.redis_namespace}-{uuid.uuid4().hex[:8]}")
    ensure_database(own.database_url)
    migrate(own.database_url)
    with Stack(own, tmp_path / "logs", web_workers=1).up("api", "worker", "scheduler") as stack:
        yield stack


def test_a_database_outage_longer_than_the_retries_fails_no_payment(
    outage_stack: Stack, own_postgres: Cluster
) -> None:
    stack = outage_stack
    client = stack.tenant("outage")
    customer_id, method_id = client.customer_with_method(f"tok_slow_{SLOW}")
    payment_id = client.ok(client.pay(customer_id, method_id), 202)["id"]
    eventually(lambda: stack.scalar("SELECT count(*) FROM sandbox_charges WHERE payment_id = :p",
                                    p=payment_id) == 1, 30, what="the sandbox to charge")
    stack.db.dispose()
    own_postgres.stop(mode="fast")  # before the sandbox answers
    time.sleep(OUTAGE_SECONDS)  # the fault itself: how long the database stays down
    own_postgres.start()
    stack.check_alive()

    def settled() -> str | None:
        response = client.get(f"/payments/{payment_id}")
        if response.status_code == 503:  # the API's pooled connections died with the server
            return None
        status: str = client.ok(response, 200)["status"]
        return status if status in ("succeeded", "failed") else None

    assert eventually(settled, 2 * STALE_SECONDS, what=f"{payment_id} to settle") == "succeeded"
    events = [r.type for r in stack.rows(
        "SELECT type FROM outbox_events WHERE key = :p ORDER BY id", p=payment_id)]
    assert "payment.failed" not in events
    assert events.count("payment.succeeded") == 1
    assert [c["idempotency_key"] for c in client.charges(payment_id)] == [f"{payment_id}:1"]
