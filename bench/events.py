"""Outbox relay benchmark: commit-to-Kafka latency at a steady 500 events/s, and the relay's
maximum throughput on a backlog.

Runs against its own database (`se_bench_events`), its own embedded broker on a free port and
one `python -m app.events.relay` process. Prints the numbers and writes
bench/results/events.json. Targets: p99 <= 1 s, throughput >= 5,000 events/s.

    .venv/bin/python bench/events.py [--rate 500] [--seconds 20] [--backlog 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from procs import free_port
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

from app.config import Config
from app.events import outbox
from app.events.embedded_broker import EmbeddedBroker
from app.events.relay import ensure_topics
from app.ids import new_id
from app.models.database import ensure_database, migrate
from app.models.uow import UnitOfWork

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "events.json"
DATABASE = "postgresql+psycopg2://postgres@127.0.0.1:5432/se_bench_events"
TENANT = "ten_bench"




def payment_object() -> dict[str, Any]:
    """A payment as the API shows it: the typical event body (~900 bytes)."""
    now = "2026-01-31T00:00:00Z"
    return {
        "id": new_id("pay"),
        "object": "payment",
        "amount": 1999,
        "currency": "usd",
        "customer_id": new_id("cus"),
        "payment_method_id": new_id("pm"),
        "subscription_id": None,
        "status": "succeeded",
        "failure_code": None,
        "failure_message": None,
        "amount_refunded": 0,
        "attempts": [
            {
                "number": 1,
                "status": "succeeded",
                "provider": "sandbox",
                "failure_code": None,
                "created_at": now,
            }
        ],
        "description": "Pro plan, monthly",
        "livemode": False,
        "created_at": now,
        "updated_at": now,
        "metadata": {"order_id": "ord_12345", "channel": "web"},
        "next_action": None,
    }


class Consumer:
    """Reads both partitions sets by manual assignment and stamps each event's arrival."""

    def __init__(self, bootstrap: str, partitions: int) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, fetch_max_wait_ms=10, enable_auto_commit=False
        )
        self.consumer.assign(
            [TopicPartition(t, p) for t in outbox.TOPICS.values() for p in range(partitions)]
        )
        self.consumer.seek_to_end()
        self.arrived: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for records in self.consumer.poll(timeout_ms=50).values():
                now = time.time()
                for record in records:
                    self.arrived.setdefault(json.loads(record.value)["id"], now)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.consumer.close()


def steady_load(uows: Any, rate: int, seconds: float, tenant_id: str = TENANT) -> dict[str, float]:
    """Write `rate` events/s for `seconds` (25 per transaction); event id -> commit time."""
    committed: dict[str, float] = {}
    per_txn = 25
    interval = per_txn / rate
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        with uows() as uow:
            ids = [
                outbox.record(
                    uow.session,
                    "payment.succeeded",
                    payment_object(),
                    tenant_id=tenant_id,
                    livemode=False,
                )
                for _ in range(per_txn)
            ]
            uow.commit()
        now = time.time()
        committed.update(dict.fromkeys(ids, now))
        tick += 1
        delay = start + tick * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return committed


def fill_backlog(engine: Any, count: int) -> None:
    """Insert `count` unsent payment events in bulk (the relay is stopped meanwhile)."""
    rows = []
    for _ in range(count):
        obj = payment_object()
        event_id = new_id("evt")
        payload = {
            "id": event_id,
            "type": "payment.succeeded",
            "schema_version": 1,
            "occurred_at": "2026-01-31T00:00:00Z",
            "tenant_id": TENANT,
            "livemode": False,
            "data": {"object": obj},
        }
        rows.append({"event_id": event_id, "key": obj["id"], "payload": json.dumps(payload)})
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO outbox_events (event_id, topic, key, type, payload, mail_enqueued_at)"
                " VALUES (:event_id, 'billing.payments', :key, 'payment.succeeded',"
                " CAST(:payload AS jsonb), now())"
            ),
            rows,
        )


def unsent(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM outbox_events WHERE sent_at IS NULL")))


def start_relay(config: Config, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **config.to_env(), "LOG_LEVEL": "WARNING"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.events.relay"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process and its children (shards) have used so far."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=1, help="RELAY_SHARDS of the relay")
    args = parser.parse_args()

    ensure_database(DATABASE)
    migrate(DATABASE)
    broker = EmbeddedBroker(port=free_port())
    broker.start()
    config = replace(
        Config.from_env({}, engine_env="development"),
        database_url=DATABASE,
        kafka_bootstrap_servers=broker.bootstrap,
        redis_namespace="se-bench-events",
    )
    engine = create_engine(DATABASE, pool_size=4)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE outbox_events"))
    ensure_topics(config)
    log = Path(tempfile.gettempdir()) / "bench-events-relay.log"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    relay = start_relay(config, log)
    consumer = Consumer(broker.bootstrap, config.kafka_topic_partitions)
    try:
        factory = sessionmaker(engine, expire_on_commit=False)
        warm = steady_load(lambda: UnitOfWork(factory), 50, 1.0)  # the relay up and active
        while not warm.keys() <= consumer.arrived.keys():
            time.sleep(0.05)
        committed = steady_load(lambda: UnitOfWork(factory), args.rate, args.seconds)
        deadline = time.monotonic() + 60
        while not committed.keys() <= consumer.arrived.keys() and time.monotonic() < deadline:
            time.sleep(0.1)
        latencies = [consumer.arrived[e] - t for e, t in committed.items() if e in consumer.arrived]
        lost = len(committed) - len(latencies)

        relay.terminate()
        relay.wait(timeout=30)
        fill_backlog(engine, args.backlog)
        started = time.monotonic()
        relay = start_relay(config, log)
        while unsent(engine) and time.monotonic() - started < 300:
            time.sleep(0.05)
        drained = time.monotonic() - started
        relay_cpu = cpu_seconds(relay.pid)
        throughput = args.backlog / drained
    finally:
        consumer.close()
        relay.terminate()
        relay.wait(timeout=30)
        broker.stop()
        engine.dispose()

    result = {
        "benchmark": "commit-to-Kafka latency and relay throughput",
        "rate_events_per_s": args.rate,
        "relay_shards": args.shards,
        "seconds": args.seconds,
        "events": len(committed),
        "not_arrived": lost,
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "latency_max_ms": round(max(latencies) * 1000, 1),
        "writer_events_per_s": round(len(committed) / args.seconds),
        "backlog_events": args.backlog,
        "backlog_drain_s_including_relay_start": round(drained, 2),
        "relay_max_events_per_s": round(throughput),
        "relay_cpu_s_for_backlog": round(relay_cpu, 2),
        "relay_events_per_cpu_s": round(args.backlog / relay_cpu),
        "targets": {"latency_p99_ms": 1000, "relay_events_per_s": 5000},
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
