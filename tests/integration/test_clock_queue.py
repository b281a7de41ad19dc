"""Test clocks run on their own queue, `clocks`, and a tenant's clocks wait for a free slot
of its TEST_CLOCK_TENANT_CONCURRENCY: test keys cannot fill the queue or the worker threads
that live renewals need."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis
from sqlalchemy import text

from app.api import create_app
from app.config import Config
from tests.conftest import start_worker
from tests.support import Api, eventually


@pytest.fixture(scope="module")
def own(config: Config) -> Config:
    """The session's settings on a Redis namespace of this module, one clock per tenant."""
    return replace(config, redis_namespace=f"{config.redis_namespace}-clk-{uuid.uuid4().hex[:6]}",
                   test_clock_tenant_concurrency=1)


def queued(config: Config, queue: str) -> int:
    client = redis.Redis.from_url(config.redis_url)
    try:
        return int(client.hlen(f"{config.redis_namespace}-dramatiq:{queue}.msgs"))
    finally:
        client.close()


def advance(api: Api) -> str:
    clock = api.ok(api.post("/test-clocks", {"frozen_time": "2024-01-31T00:00:00Z"}), 201)
    api.ok(api.post(f"/test-clocks/{clock['id']}/advance",
                    {"frozen_time": "2024-03-31T00:00:00Z"}), 202)
    return str(clock["id"])


def status(api: Api, clock_id: str) -> str:
    return str(api.ok(api.get(f"/test-clocks/{clock_id}"), 200)["status"])


def test_an_advance_goes_to_the_clocks_queue(own: Config) -> None:
    api = Api.for_new_tenant(create_app(own))
    default_before = queued(own, "default")
    advance(api)
    assert queued(own, "clocks") == 1
    assert queued(own, "default") == default_before


@pytest.fixture()
def worker(own: Config) -> Iterator[None]:
    process = start_worker(own, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    yield
    process.terminate()
    process.wait(timeout=30)


def test_a_clock_waits_while_its_tenants_slots_are_taken(own: Config, worker: None) -> None:
    app = create_app(own)
    api = Api.for_new_tenant(app)
    engine = app.extensions["container"].engine
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as holder:
        holder.execute(text("SELECT pg_advisory_lock(hashtextextended(:n, 0))"),
                       {"n": f"clock-slot:{api.tenant_id}:0"})  # another clock of the tenant
        clock_id = advance(api)
        eventually(lambda: queued(own, "clocks.DQ") > 0, 30,
                   what="the advance to be sent again for later")
        assert status(api, clock_id) == "advancing"
        holder.execute(text("SELECT pg_advisory_unlock_all()"))
    eventually(lambda: status(api, clock_id) == "ready", 30, what="the clock's turn")
