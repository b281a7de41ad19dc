"""Webhooks out: commit-to-receiver latency at a steady rate, with a slow endpoint beside.

Runs its own database (`se_bench_webhooks`), Redis namespace and embedded broker, the outbox
relay, the webhook dispatcher and a worker fleet as `make run` starts them, and a receiver
on this machine with two endpoints of one tenant: one answering at once, one 5 s late.
Events are committed to the outbox at `--rate` per second for `--seconds`; latency is from
each commit to the fast endpoint receiving it (it answers 2xx at once). Prints the numbers
and writes bench/results/webhooks.json. Target: p99 <= 1 s at 200 events/s.

    .venv/bin/python bench/webhooks.py [--rate 200] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from events import percentile, steady_load
from procs import Fleet, free_port, machine
from sqlalchemy.orm import sessionmaker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.bootstrap import build  # noqa: E402
from app.config import Config  # noqa: E402
from app.events.embedded_broker import EmbeddedBroker  # noqa: E402
from app.events.relay import ensure_topics  # noqa: E402
from app.models.database import drop_database, ensure_database, migrate  # noqa: E402
from app.models.uow import UnitOfWork  # noqa: E402
from app.services import webhook_endpoints  # noqa: E402
from app.services.scope import Scope  # noqa: E402
from app.services.tenants import create_tenant  # noqa: E402
from tests.receiver import Receiver  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "webhooks.json"
DATABASE = "postgresql+psycopg2://postgres@127.0.0.1:5432/se_bench_webhooks"
SLOW_SECONDS = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()

    drop_database(DATABASE)
    ensure_database(DATABASE)
    migrate(DATABASE)
    broker = EmbeddedBroker(port=free_port())
    broker.start()
    config = replace(Config.from_env({}, engine_env="development"), database_url=DATABASE,
                     kafka_bootstrap_servers=broker.bootstrap,
                     redis_namespace="se-bench-webhooks", webhooks_allow_private_networks=True,
                     log_level="WARNING")
    ensure_topics(config)
    container = build(config)
    env = {**os.environ, **config.to_env(), "dramatiq_worker_timeout": "100"}
    fleet = Fleet(Path(tempfile.mkdtemp(prefix="bench-webhooks-")))
    bin_dir = Path(sys.executable).parent
    with Receiver(slow_seconds=SLOW_SECONDS) as receiver:
        with container.uow() as uow:
            tenant = create_tenant(uow, "bench")
            uow.commit()
        scope = Scope(tenant.tenant_id, livemode=False)
        with container.uow() as uow:
            for path in ("/ok", "/slow"):
                webhook_endpoints.create_endpoint(
                    uow, scope, container.sealer, url=receiver.url(path),
                    event_types=["payment.succeeded"], description=path, allow_private=True)
            uow.commit()
        fleet.start("relay", [sys.executable, "-m", "app.events.relay"], env, ROOT)
        fleet.start("webhooks", [sys.executable, "-m", "app.webhooks"], env, ROOT)
        fleet.start("worker", [str(bin_dir / "dramatiq"), "app.jobs", "--processes", "2",
                               "--threads", "4"], env, ROOT)
        factory = sessionmaker(container.engine, expire_on_commit=False)

        def uows() -> UnitOfWork:
            return UnitOfWork(factory)

        def arrived() -> dict[str, float]:
            first: dict[str, float] = {}
            for hit in receiver.on("/ok"):
                first.setdefault(hit.headers["webhook-id"], hit.at)
            return first

        try:
            warm = steady_load(uows, 20, 2.0, tenant.tenant_id)  # every process up and polling
            deadline = time.monotonic() + 120
            while not warm.keys() <= arrived().keys():
                fleet.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError("the warm-up events never arrived")
                time.sleep(0.1)
            load_before = os.getloadavg()
            committed = steady_load(uows, args.rate, args.seconds, tenant.tenant_id)
            deadline = time.monotonic() + 60
            while not committed.keys() <= arrived().keys() and time.monotonic() < deadline:
                time.sleep(0.1)
            got = arrived()
            latencies = [got[e] - t for e, t in committed.items() if e in got]
            slow = {h.headers["webhook-id"] for h in receiver.on("/slow")} & committed.keys()
            fleet.check_alive()
        finally:
            fleet.stop_all()
            broker.stop()
            container.engine.dispose()

    result = {
        "benchmark": "webhooks out: outbox commit -> relay -> Kafka -> dispatcher -> worker ->"
                     " receiver 2xx",
        "rate_events_per_s": args.rate,
        "seconds": args.seconds,
        "events": len(committed),
        "fast_endpoint_delivered": len(latencies),
        "fast_endpoint_not_delivered_within_60s": len(committed) - len(latencies),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "latency_max_ms": round(max(latencies) * 1000, 1),
        "delivered_events_per_s": round(len(latencies) / args.seconds, 1),
        "slow_endpoint": {"answer_seconds": SLOW_SECONDS, "delivered": len(slow)},
        "targets": {"latency_p99_ms": 1000, "rate_events_per_s": 200},
        "load_avg_1m_before": round(load_before[0], 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        "machine": machine(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
