"""Test-clock advance: a year of monthly renewals for N subscriptions in one advance.

    .venv/bin/python bench/clocks.py [--subscriptions 100] [--months 12]

API.md: "Advancing a year of monthly renewals for 100 subscriptions finishes in seconds."
Runs on a database of its own (`se_bench_clocks`, recreated, removed afterwards): a tenant,
a test clock at 2024-01-31, N customers on it each with a sandbox `tok_ok` subscription to a
monthly plan (first period paid), then the worker's own advance service
(`clocks.advance.advance_clock`, what the `advance_test_clock` actor runs) moves the clock
--months ahead. Checks that every subscription was charged once per period and ends on the
calendar's period; prints and writes bench/results/clocks.json. Target: <= 10 s.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from procs import PG, ROOT, machine
from sqlalchemy import func, select

from app.billing.periods import add_intervals
from app.bootstrap import build
from app.config import Config
from app.models import Payment, PaymentStatus, Provider, SandboxCharge, Subscription, TestClock
from app.models.database import drop_database, ensure_database, migrate
from app.models.uow import UnitOfWork
from app.services import clocks, customers, plans, subscriptions
from app.services.clocks import advance
from app.services.scope import Scope
from app.services.tenants import create_tenant

RESULTS = ROOT / "bench" / "results" / "clocks.json"
DATABASE = "se_bench_clocks"
START = datetime(2024, 1, 31, tzinfo=UTC)
TARGET_SECONDS = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    config = Config.from_env({}, database_url=f"{PG}/{DATABASE}", redis_namespace="clocks-bench",
                             engine_env="development")
    drop_database(config.database_url)
    ensure_database(config.database_url)
    migrate(config.database_url)
    try:
        results = {"machine": machine(), **run(config, args.subscriptions, args.months)}
    finally:
        drop_database(config.database_url)
    results["target"] = {f"seconds <= {TARGET_SECONDS:g}": results["seconds"] <= TARGET_SECONDS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{args.subscriptions} subscriptions x {args.months} monthly renewals in one advance: "
          f"{results['seconds']} s wall, {results['cpu_seconds']} s CPU in the advance "
          f"({results['due_steps']} due steps); checks: {results['checks']}")
    print(f"written to {args.out}")


def run(config: Config, count: int, months: int) -> dict[str, Any]:
    container = build(config)

    def dropped(actor: str, *args: object, delay_ms: int | None = None) -> None:
        """The first payments are charged by the advance itself (it settles them first)."""

    def unsent() -> UnitOfWork:
        """A unit of work whose messages are dropped: no worker runs here."""
        return UnitOfWork(container.session_factory, dropped)

    def do(action: Any) -> Any:
        with unsent() as uow:
            done = action(uow)
            uow.commit()
            return done

    def seed(uow: UnitOfWork) -> str:
        customer = customers.create_customer(uow, scope, email=None, name=None, metadata={},
                                             test_clock_id=clock_id)
        method = customers.attach_payment_method(uow, container.providers, scope, customer.id,
                                                 provider=Provider.SANDBOX, token="tok_ok")
        return subscriptions.create_subscription(
            uow, scope, customer_id=customer.id, plan_id=plan_id,
            payment_method_id=method.id, trial_days=None, metadata={}).id

    with container.uow() as uow:
        scope = Scope(create_tenant(uow, "bench-clocks").tenant_id, livemode=False)
        uow.commit()
    clock_id = do(lambda u: clocks.create_clock(u, scope, START)).id
    plan_id = do(lambda u: plans.create_plan(u, scope, code="monthly", name="Monthly",
                                             amount=1000, currency="usd", interval="month",
                                             interval_count=1, trial_days=0)).id
    sub_ids = [do(seed) for _ in range(count)]
    until = add_intervals(START, "month", 1, months)
    do(lambda u: clocks.start_advance(u, scope, clock_id, until))
    cpu, started = time.process_time(), time.monotonic()
    steps = advance.advance_clock(unsent, container.providers, clock_id,
                                  lease_seconds=config.payment_lease_seconds)
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    with container.session_factory() as session:
        payments = session.scalars(select(Payment).where(Payment.subscription_id.in_(sub_ids)))
        statuses = [p.status for p in payments]
        charged = session.scalar(select(func.count()).select_from(SandboxCharge).where(
            SandboxCharge.tenant_id == scope.tenant_id))
        ends = set(session.scalars(select(Subscription.current_period_end).where(
            Subscription.id.in_(sub_ids))))
        ready = session.get_one(TestClock, clock_id).status.value == "ready"
    expected = count * (months + 1)
    checks = {
        "payments": len(statuses) == expected,
        "all succeeded": set(statuses) == {PaymentStatus.SUCCEEDED},
        "sandbox charges": charged == expected,
        "period ends": ends == {add_intervals(START, "month", 1, months + 1)},
        "clock ready": ready,
    }
    return {
        "subscriptions": count,
        "months": months,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "due_steps": steps,
        "payments": len(statuses),
        "checks": "all as expected" if all(checks.values()) else checks,
    }


if __name__ == "__main__":
    main()
