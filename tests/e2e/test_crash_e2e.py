"""Crashes on the /pay path: SIGKILLed workers and scheduler, lost queue messages.

The tests run an API and scheduler on a database and Redis namespace of this module's own
(`own_stack`) and start and kill worker fleets themselves. Whatever dies, every payment must
end `succeeded`, charged at the sandbox exactly once, with exactly one `payment.succeeded`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text

from tests.e2e.stack import Client, Stack
from tests.support import eventually

pytestmark = pytest.mark.e2e

ROUNDS = 3
PER_ROUND = 15
SETTLE_SECONDS = 40.0
RATE_LIMIT = "10000/second"


def _statuses(stack: Stack, tenant_id: str) -> Counter[str]:
    rows = stack.rows(
        "SELECT status, count(*) FROM payments WHERE tenant_id = :t GROUP BY status", t=tenant_id
    )
    return Counter({status: count for status, count in rows})


def _pay_many(client: Client, count: int) -> list[str]:
    customer_id, method_id = client.customer_with_method("tok_ok")
    return [client.ok(client.pay(customer_id, method_id), 202)["id"] for _ in range(count)]


def _all_succeeded(stack: Stack, client: Client, count: int) -> None:
    def done() -> Counter[str] | None:
        stack.check_alive()
        statuses = _statuses(stack, client.tenant_id)
        return None if statuses != Counter({"succeeded": count}) else statuses

    try:
        eventually(done, SETTLE_SECONDS, what=f"all {count} payments to succeed")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; now {_statuses(stack, client.tenant_id)}") from None


def _assert_each_charged_once(stack: Stack, client: Client, payment_ids: list[str]) -> None:
    """No payment lost, each succeeded with one attempt, one charge and one event."""
    stored = {r.id for r in stack.rows("SELECT id FROM payments WHERE tenant_id = :t",
                                       t=client.tenant_id)}
    assert stored == set(payment_ids)
    for payment_id in payment_ids:
        keys = [c["idempotency_key"] for c in client.charges(payment_id)]
        assert keys == [f"{payment_id}:1"], f"{payment_id} charged {len(keys)} times: {keys}"
        payment = client.ok(client.get(f"/payments/{payment_id}"), 200)
        assert payment["status"] == "succeeded", payment
        assert [(a["number"], a["status"]) for a in payment["attempts"]] == [(1, "succeeded")]
    events = Counter(
        (r.key, r.type)
        for r in stack.rows(
            "SELECT key, type FROM outbox_events WHERE key = ANY(:ids)", ids=payment_ids
        )
    )
    expected = {(p, t) for p in payment_ids for t in ("payment.created", "payment.succeeded")}
    assert set(events) == expected
    assert set(events.values()) == {1}, [e for e, n in events.items() if n != 1]


def _in_flight(stack: Stack, tenant_id: str) -> tuple[set[str], set[str]]:
    """Processing payments: (claimed but not yet charged, charged but not yet settled)."""
    rows = stack.rows(
        "SELECT p.id, count(c.id) FROM payments p"
        " LEFT JOIN sandbox_charges c ON c.payment_id = p.id"
        " WHERE p.tenant_id = :t AND p.status = 'processing' GROUP BY p.id",
        t=tenant_id,
    )
    return {r[0] for r in rows if r[1] == 0}, {r[0] for r in rows if r[1] > 0}


@contextmanager
def _writes_held(stack: Stack, table: str) -> Iterator[None]:
    """Keep every write to `table` waiting (reads go on) while the block runs.

    `sandbox_charges`: the sandbox records no charge, as a provider that has not charged
    yet; a charge killed meanwhile never lands. `outbox_events`: a batch charged at the
    sandbox cannot commit its settle, whose events wait; a kill leaves it charged, unsettled
    (without the hold, the one-statement settle leaves a window too short to aim at)."""
    engine = create_engine(stack.config.database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            connection.execute(text(f"LOCK TABLE {table} IN EXCLUSIVE MODE"))
            yield
            connection.rollback()
    finally:
        engine.dispose()


def _await_new_in_flight(stack: Stack, tenant_id: str, *, after_charge: bool,
                         seen: set[str]) -> None:
    """Wait until the running fleet has a payment in flight that no earlier kill left."""
    def fresh() -> set[str]:
        stack.check_alive()
        return _in_flight(stack, tenant_id)[after_charge] - seen

    what = "charged, unsettled" if after_charge else "claimed, uncharged"
    eventually(fresh, 30, what=f"the fleet to leave a payment {what}")


def test_worker_killed_mid_charge_is_finished_by_another_worker_charged_once(
    own_stack: Stack,
) -> None:
    client = own_stack.tenant("crash-worker", rate_limit=RATE_LIMIT)
    started = time.monotonic()
    payment_ids: list[str] = []
    claimed: set[str] = set()  # left claimed, not charged, by a kill
    charged: set[str] = set()  # left charged at the sandbox, not settled, by a kill
    rounds = []
    for round_ in range(ROUNDS):
        round_started = time.monotonic()
        payment_ids += _pay_many(client, PER_ROUND)
        # Round 1 aims right after a claim (the sandbox's ledger held: a batch claims, commits,
        # and waits to charge), later rounds right after a charge (the events held: a batch
        # charges, and its settle waits to commit).
        with _writes_held(own_stack, "outbox_events" if round_ else "sandbox_charges"):
            own_stack.start("worker")
            _await_new_in_flight(own_stack, client.tenant_id, after_charge=round_ > 0,
                                 seen=charged if round_ else claimed)
            own_stack.kill("worker")
        now_claimed, now_charged = _in_flight(own_stack, client.tenant_id)
        claimed |= now_claimed
        charged |= now_charged
        rounds.append(time.monotonic() - round_started)

    recovery_started = time.monotonic()
    own_stack.start("worker")
    _all_succeeded(own_stack, client, len(payment_ids))
    elapsed = time.monotonic() - started
    print(f"\nworker fleet SIGKILLed {ROUNDS}x (rounds took"
          f" {' / '.join(f'{r:.1f}' for r in rounds)} s), leaving {len(claimed)} payments"
          f" claimed but uncharged and {len(charged)} charged but unsettled; a new fleet"
          f" settled all {len(payment_ids)} in {time.monotonic() - recovery_started:.1f} s;"
          f" {elapsed:.1f} s in all")

    assert charged, "no kill landed between a charge and its settlement"
    _assert_each_charged_once(own_stack, client, payment_ids)
    assert elapsed < 60


def test_lost_messages_and_killed_scheduler_are_recovered_by_reconciliation(
    own_stack: Stack,
) -> None:
    client = own_stack.tenant("crash-scheduler", rate_limit=RATE_LIMIT)
    payment_ids = _pay_many(client, PER_ROUND)
    # The scheduler is alive and re-driving the stale pending payments (it pushes updated_at)…
    eventually(
        lambda: own_stack.scalar(
            "SELECT count(*) FROM payments WHERE tenant_id = :t"
            " AND updated_at > created_at + interval '0.5 seconds'",
            t=client.tenant_id,
        ),
        30,
        what="the scheduler to re-drive a stale payment",
    )
    # …when it is killed, and every queued message is lost (as a Redis restart loses them).
    own_stack.kill("scheduler")
    own_stack.flush_queues()
    assert own_stack.queued_messages() == 0
    assert _statuses(own_stack, client.tenant_id) == Counter({"pending": PER_ROUND})

    recovery_started = time.monotonic()
    own_stack.start("worker", "scheduler")
    _all_succeeded(own_stack, client, PER_ROUND)
    print(f"\nqueue flushed, scheduler SIGKILLed; after a restart reconciliation settled all"
          f" {PER_ROUND} in {time.monotonic() - recovery_started:.1f} s")
    _assert_each_charged_once(own_stack, client, payment_ids)
