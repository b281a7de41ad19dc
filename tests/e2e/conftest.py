"""End-to-end fixtures: the engine's real processes, talked to over HTTP only.

`stack` is this session's API + worker fleet + scheduler; `own_stack` is one per module, for
tests that kill processes. Each runs on a database and Redis namespace of its own (derived
from the session's `config`), so no other test's payments are reconciled or charged by it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
import redis

from app.config import Config
from app.models.database import drop_database, ensure_database, migrate
from tests.e2e.stack import Client, Stack
from tests.servers import RedisServer
from tests.support import eventually


@contextmanager
def own_database(config: Config) -> Iterator[Config]:
    """`config` on a fresh database and Redis namespace of its own, dropped afterwards.

    The session's database is shared with tests that start their own workers and leave
    payments in chosen states; a stack there would reconcile and charge them.
    """
    suffix = uuid.uuid4().hex[:8]
    own = replace(
        config,
        database_url=f"{config.database_url}_{suffix}",
        redis_namespace=f"{config.redis_namespace}-{suffix}",
    )
    ensure_database(own.database_url)
    migrate(own.database_url)
    try:
        yield own
    finally:
        client = redis.Redis.from_url(own.redis_url)
        for key in client.scan_iter(f"{own.redis_namespace}*"):
            client.delete(key)
        client.close()
        drop_database(own.database_url)


@pytest.fixture(scope="session")
def stack(config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """gunicorn (2 workers), `dramatiq app.jobs` and the scheduler, ready and warmed up."""
    with own_database(config) as own:
        with Stack(own, tmp_path_factory.mktemp("e2e-logs")).up(
                "api", "worker", "scheduler") as running:
            _warm_up(running.tenant("warm-up"))
            yield running


def _warm_up(client: Client) -> None:
    """One payment through every process, so tests start with a fleet known to work."""
    started = time.monotonic()
    customer_id, method_id = client.customer_with_method()
    location = client.pay(customer_id, method_id).headers["Location"]
    eventually(lambda: client.ok(client.get(location), 200)["status"] == "succeeded",
               60, what="the warm-up payment to succeed")
    print(f"\ne2e stack up; first (cold) payment settled in {time.monotonic() - started:.2f}s")


@pytest.fixture()
def client(stack: Stack) -> Client:
    """A brand-new tenant of the session stack, made with the operator CLI."""
    return stack.tenant(f"e2e-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def _own_stack(config: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with own_database(config) as own:
        running = Stack(own, tmp_path_factory.mktemp("own-stack-logs"), web_workers=1)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture()
def own_stack(_own_stack: Stack) -> Stack:
    """A stack on a database and Redis namespace of this module's own: API and scheduler
    running, no worker fleet (the test starts and kills fleets itself)."""
    if "worker" in _own_stack.running():
        _own_stack.processes["worker"].stop()
    _own_stack.start(*({"api", "scheduler"} - _own_stack.running()))
    _own_stack.wait_ready()
    return _own_stack


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this module's own, which its tests may stop, freeze and restart."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_stack(
    config: Config, own_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """API, worker fleet and scheduler on a database of their own and on `own_redis`.

    Lock waits may last 30 s, so a test can hold a request inside its view with a lock.
    """
    with own_database(replace(config, redis_url=own_redis.url,
                               db_lock_timeout_ms=30_000)) as own:
        with Stack(own, tmp_path_factory.mktemp("redis-stack-logs")).up(
                "api", "worker", "scheduler") as running:
            yield running
