"""Renewals survive SIGKILL: schedulers and worker killed mid-batch, their messages lost.

Subscriptions are made over HTTP, then moved into the past in the database so they are due
now. Two schedulers and a worker fleet start renewing them; while renewals are in flight the
three are SIGKILLed and every queued message is dropped (as a Redis restart would). Started
again, they must renew every subscription exactly once: one payment per (subscription,
period), charged once at the sandbox, one `subscription.renewed` each.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text

from app.billing.periods import add_intervals
from app.clock import utcnow
from app.config import Config
from app.models.database import drop_database, ensure_database, migrate
from app.render import timestamp
from tests.conftest import child_env
from tests.e2e.stack import Client, Process, Stack
from tests.support import eventually

pytestmark = pytest.mark.e2e

SUBSCRIPTIONS = 80
FLEET = ("worker", "scheduler", "scheduler-2")


@pytest.fixture()
def renewal_stack(config: Config, tmp_path: Path) -> Iterator[Stack]:
    """API and worker on a database of their own, two schedulers ready to start; short leases."""
    suffix = uuid.uuid4().hex[:8]
    own = replace(
        config,
        database_url=f"{config.database_url}_{suffix}",
        redis_namespace=f"{config.redis_namespace}-{suffix}",
        renewal_interval_seconds=0.2,
        renewal_batch_size=20,
        renewal_message_size=5,
        subscription_lease_seconds=4,
    )
    ensure_database(own.database_url)
    migrate(own.database_url)
    stack = Stack(own, tmp_path / "logs")
    stack.processes["scheduler-2"] = Process(
        "scheduler-2", [sys.executable, "-m", "app.scheduler"], child_env(own),
        tmp_path / "logs" / "scheduler-2.log",
    )
    try:
        with stack.up("api", "worker"):
            yield stack
    finally:
        client = redis.Redis.from_url(own.redis_url)
        for key in client.scan_iter(f"{own.redis_namespace}*"):
            client.delete(key)
        client.close()
        drop_database(own.database_url)


def _subscribe(client: Client, count: int) -> list[str]:
    customer_id, method_id = client.customer_with_method("tok_ok")
    plan = client.ok(client.post("/plans", {"code": "pro", "name": "Pro", "amount": 3000,
                                            "currency": "usd", "interval": "month"}), 201)
    body = {"customer_id": customer_id, "plan_id": plan["id"], "payment_method_id": method_id}
    return [str(client.ok(client.post("/subscriptions", body), 201)["id"]) for _ in range(count)]


def _make_due(config: Config, sub_ids: list[str]) -> datetime:
    """Move the current periods so they ended a week ago (a test's write, not the stack's)."""
    start = utcnow() - timedelta(days=40)
    end = add_intervals(start, "month", 1, 1)
    engine = create_engine(config.database_url)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE subscriptions SET billing_anchor = :s, current_period_start = :s,"
                 " current_period_end = :e, next_event_at = :e WHERE id = ANY(:ids)"),
            {"s": start, "e": end, "ids": sub_ids},
        )
    engine.dispose()
    return end


def _renewals(stack: Stack, sub_ids: list[str], end: datetime) -> Counter[str]:
    """Statuses of the renewal payments (period starting at `end`) of these subscriptions."""
    rows = stack.rows(
        "SELECT status, count(*) FROM payments WHERE subscription_id = ANY(:ids)"
        " AND purpose = 'cycle' AND period_start = :end GROUP BY status", ids=sub_ids, end=end)
    return Counter({status: count for status, count in rows})


def _mid_batch(stack: Stack, sub_ids: list[str], end: datetime) -> Counter[str]:
    """The renewal payments once some are paid and others are still in flight."""
    stack.check_alive()
    now = _renewals(stack, sub_ids, end)
    in_flight = now["pending"] + now["processing"]
    return now if in_flight and 0 < now["succeeded"] < len(sub_ids) else Counter()


def _all_renewed(stack: Stack, sub_ids: list[str], end: datetime) -> bool:
    stack.check_alive()
    return _renewals(stack, sub_ids, end) == Counter({"succeeded": len(sub_ids)})


def _assert_renewed_exactly_once(stack: Stack, client: Client, sub_ids: list[str],
                                 end: datetime) -> None:
    payments = stack.rows(
        "SELECT id, subscription_id, period_start, status FROM payments"
        " WHERE subscription_id = ANY(:ids)", ids=sub_ids)
    assert Counter(p.status for p in payments) == Counter({"succeeded": 2 * len(sub_ids)})
    per_period = Counter((p.subscription_id, p.period_start) for p in payments)
    assert set(per_period.values()) == {1}, "a period was billed twice"
    assert sorted(p.subscription_id for p in payments if p.period_start == end) == sorted(sub_ids)
    charged = Counter(r.payment_id for r in stack.rows(
        "SELECT payment_id FROM sandbox_charges WHERE payment_id = ANY(:ids)",
        ids=[p.id for p in payments]))
    assert set(charged) == {p.id for p in payments} and set(charged.values()) == {1}
    events = Counter((r.key, r.type) for r in stack.rows(
        "SELECT key, type FROM outbox_events WHERE key = ANY(:ids)",
        ids=sub_ids + [p.id for p in payments]))
    assert {k for (k, t), n in events.items() if t == "subscription.renewed" and n == 1} == set(
        sub_ids)
    assert all(n == 1 for (_, t), n in events.items() if t == "payment.succeeded")
    for sub_id in sub_ids[:5]:  # and the API agrees
        sub: dict[str, Any] = client.ok(client.get(f"/subscriptions/{sub_id}"), 200)
        assert sub["status"] == "active"
        assert sub["current_period_start"] == timestamp(end)


def test_renewals_survive_killed_schedulers_and_worker(renewal_stack: Stack) -> None:
    started = time.monotonic()
    stack = renewal_stack
    client = stack.tenant("crash-renewals", rate_limit="10000/second")
    sub_ids = _subscribe(client, SUBSCRIPTIONS)
    eventually(lambda: stack.scalar(
        "SELECT count(*) FROM subscriptions WHERE id = ANY(:ids) AND status = 'active'",
        ids=sub_ids) == SUBSCRIPTIONS, 30, what="the first payments")
    end = _make_due(stack.config, sub_ids)

    stack.start("scheduler", "scheduler-2")
    at_kill = eventually(lambda: _mid_batch(stack, sub_ids, end), 30,
                         what="renewals to be in flight")
    for name in FLEET:
        stack.kill(name)
    lost = stack.flush_queues()
    after_kill = _renewals(stack, sub_ids, end)
    unsettled_charged = stack.scalar(
        "SELECT count(DISTINCT p.id) FROM payments p JOIN sandbox_charges c ON c.payment_id = p.id"
        " WHERE p.subscription_id = ANY(:ids) AND p.status = 'processing'", ids=sub_ids)
    assert after_kill["succeeded"] < SUBSCRIPTIONS, "the kill landed after the batch"

    stack.start(*FLEET)
    eventually(lambda: _all_renewed(stack, sub_ids, end), 40, what="every renewal")
    elapsed = time.monotonic() - started
    print(f"\nkilled 2 schedulers + worker with renewals {dict(at_kill)} "
          f"({dict(after_kill)} once dead, {unsettled_charged} charged but unsettled, "
          f"{lost} queue keys dropped); "
          f"all {SUBSCRIPTIONS} renewed once in {elapsed:.1f}s")
    _assert_renewed_exactly_once(stack, client, sub_ids, end)
    assert elapsed < 60
