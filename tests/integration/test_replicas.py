"""Reads on a real streaming replica: they land there, a caller always reads its own writes,
and a replica that lags or stops costs nothing but latency."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from app.api import create_app
from app.bootstrap import Container
from app.config import Config
from app.models.database import ensure_database, migrate
from app.replicas import Replica
from tests.servers import Cluster
from tests.support import UNLIMITED, Api, eventually

MAX_LAG = 1.0
STATEMENT_TIMEOUT_MS = 1000  # a frozen replica is given up after this and a second more
#: Reads counted on the replica: far more than the monitor's probes (2/s) in the time taken.
READS = 100


@pytest.fixture(scope="module")
def replicated(config: Config, streaming: tuple[Cluster, Cluster]) -> Iterator[Flask]:
    """The API on the session's own primary, reading from its replica (plain postgresql://)."""
    primary, replica = streaming
    database = f"se_replicas_{uuid.uuid4().hex[:8]}"
    ensure_database(primary.url(database))
    migrate(primary.url(database))
    yield create_app(replace(
        config, database_url=primary.url(database),
        database_replica_urls=f" {replica.url(database, driver='')} ,",
        replica_max_lag_seconds=MAX_LAG, redis_namespace=f"{config.redis_namespace}-{database}",
        db_statement_timeout_ms=STATEMENT_TIMEOUT_MS,
    ))


@pytest.fixture()
def replica(replicated: Flask, streaming: tuple[Cluster, Cluster]) -> Iterator[Cluster]:
    """The replica, replaying and in use when the test starts, and again when it ends."""
    server = streaming[1]
    in_use(replicated)
    yield server
    if server.scalar("SELECT pg_is_wal_replay_paused()"):
        server.scalar("SELECT pg_wal_replay_resume()")
    in_use(replicated)


def member(app: Flask) -> Replica:
    container: Container = app.extensions["container"]
    assert container.replicas is not None
    return container.replicas.replicas[0]


def in_use(app: Flask) -> None:
    container: Container = app.extensions["container"]
    assert container.replicas is not None
    container.replicas.choose(0)  # starts the monitor
    eventually(member(app).ready, 30, what="the replica to be in use")


def reads_on(server: Cluster, database: str) -> int:
    """Transactions the server has ended in `database` (a standby counts its reads; a
    session's read ends in a rollback). A backend reports them when it exits, or when it
    has been idle for a while (up to 10 s)."""
    return int(server.scalar(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", database))


def fallbacks() -> float:
    return REGISTRY.get_sample_value("subscription_engine_replica_fallbacks_total") or 0.0


def database_of(app: Flask) -> str:
    return str(app.extensions["container"].config.database_url.rsplit("/", 1)[1])


def test_reads_land_on_the_replica_and_see_the_callers_own_writes(
    replicated: Flask, replica: Cluster
) -> None:
    api = Api.for_new_tenant(replicated, rate_limit=UNLIMITED)
    database = database_of(replicated)
    customer = api.customer()
    assert api.ok(api.get(f"/customers/{customer['id']}"), 200)["id"] == customer["id"]
    before = reads_on(replica, database)
    for _ in range(READS):
        api.ok(api.get(f"/customers/{customer['id']}"), 200)
    member(replicated).engine.dispose()  # its backends exit, reporting what they did
    eventually(lambda: reads_on(replica, database) >= before + READS, 20,
               what=f"{READS} reads counted by the replica")


def test_a_caller_reads_its_own_writes_while_replay_is_paused(
    replicated: Flask, replica: Cluster
) -> None:
    api = Api.for_new_tenant(replicated, rate_limit=UNLIMITED)
    replica.scalar("SELECT pg_wal_replay_pause()")
    eventually(lambda: replica.scalar("SELECT pg_get_wal_replay_pause_state()") == "paused",
               what="replay to pause")
    for _ in range(5):
        customer = api.customer()
        assert api.ok(api.get(f"/customers/{customer['id']}"), 200)["id"] == customer["id"]
        listed = api.ok(api.get("/customers"), 200)["data"]
        assert listed[0]["id"] == customer["id"]
    method = api.payment_method(customer["id"])
    body = {"amount": 500, "currency": "usd", "customer_id": customer["id"],
            "payment_method_id": method["id"]}
    paid = api.ok(api.post("/pay", body, headers={"Idempotency-Key": uuid.uuid4().hex}), 202)
    assert api.ok(api.get(f"/payments/{paid['id']}"), 200)["amount"] == 500


def test_marks_lost_with_redis_send_reads_to_the_primary(
    replicated: Flask, replica: Cluster
) -> None:
    api = Api.for_new_tenant(replicated, rate_limit=UNLIMITED)
    container: Container = replicated.extensions["container"]
    replica.scalar("SELECT pg_wal_replay_pause()")
    customer = api.customer()
    marks = list(container.cache.client.scan_iter(
        f"{container.config.redis_namespace}:replica-lsn*"))
    assert marks
    container.cache.client.delete(*marks)  # as a Redis restart or flush would
    assert api.ok(api.get(f"/customers/{customer['id']}"), 200)["id"] == customer["id"]


def test_a_replica_behind_by_more_than_the_max_lag_is_skipped_until_it_catches_up(
    replicated: Flask, replica: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    writer, reader = Api.for_new_tenant(replicated), Api.for_new_tenant(replicated)
    replica.scalar("SELECT pg_wal_replay_pause()")
    with caplog.at_level(logging.INFO, logger="app.replicas"):
        writer.customer()  # the primary moves on; the replica does not
        eventually(lambda: not member(replicated).ready(), 10, what="the replica to be skipped")
        assert member(replicated).lag > MAX_LAG
        before = fallbacks()
        for _ in range(10):
            reader.ok(reader.get("/customers"), 200)
        assert fallbacks() == before + 10
        replica.scalar("SELECT pg_wal_replay_resume()")
        eventually(member(replicated).ready, 10, what="the replica to be used again")
    messages = [(r.getMessage(), getattr(r, "reason", "")) for r in caplog.records]
    assert any(m == "read replica skipped" and "behind" in why for m, why in messages), messages
    assert ("read replica back in use", "caught up") in messages


def test_a_stopped_replica_costs_nothing_but_latency(
    replicated: Flask, replica: Cluster
) -> None:
    api = Api.for_new_tenant(replicated, rate_limit=UNLIMITED)
    customer = api.customer()
    replica.stop()
    try:
        slowest = 0.0
        for _ in range(20):
            started = time.monotonic()
            api.ok(api.get(f"/customers/{customer['id']}"), 200)
            api.ok(api.get("/customers"), 200)
            api.customer()
            slowest = max(slowest, time.monotonic() - started)
        assert not member(replicated).ready()
        assert slowest < 3.0, slowest
    finally:
        replica.start()
    in_use(replicated)
    database = database_of(replicated)
    before = reads_on(replica, database)
    for _ in range(READS):
        api.ok(api.get(f"/customers/{customer['id']}"), 200)
    member(replicated).engine.dispose()  # its backends exit, reporting what they did
    eventually(lambda: reads_on(replica, database) >= before + READS, 20,
               what="reads on the restarted replica")


def test_a_frozen_replica_costs_a_few_seconds_once(replicated: Flask, replica: Cluster) -> None:
    api = Api.for_new_tenant(replicated)
    customer = api.customer()
    replica.freeze()
    try:
        took = []
        for _ in range(10):
            started = time.monotonic()
            api.ok(api.get(f"/customers/{customer['id']}"), 200)
            took.append(time.monotonic() - started)
        assert not member(replicated).ready()
        assert max(took) < STATEMENT_TIMEOUT_MS / 1000 + 3, took
        assert sorted(took)[-2] < 1.0, took  # one read waited for it; the rest did not
    finally:
        replica.thaw()
