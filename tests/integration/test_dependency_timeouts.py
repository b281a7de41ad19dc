"""A dependency that hangs answers 503 problem+json within seconds, never a hung worker.

Each test hangs a dependency of its own (a frozen redis-server of the test, a port that
accepts and never answers, a lock held by the test) and times one request against it.
A request still hanging after the deadline is released so that the test ends either way.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from werkzeug.test import TestResponse

from app.api import create_app
from app.bootstrap import Container
from app.config import Config
from tests.integration.checks import assert_problem
from tests.servers import RedisServer, SilentListener
from tests.support import Api

#: Seconds within which a request against a hung dependency must have answered 503.
BOUND = 4.0


def timed(
    request: Callable[[], TestResponse], release: Callable[[], None]
) -> tuple[TestResponse, float]:
    """Run `request` in a thread; after BOUND seconds `release` the dependency it waits on."""
    answer: list[TestResponse] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: answer.append(request()))
    thread.start()
    thread.join(BOUND)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        release()
        thread.join(60)
    assert answer, "the request never answered"
    return answer[0], elapsed


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_frozen_redis_gives_503_within_seconds(config: Config, own_redis: RedisServer) -> None:
    app = create_app(dataclasses.replace(config, redis_url=own_redis.url))
    api = Api.for_new_tenant(app)
    api.ok(api.get("/customers"), 200)  # the limiter's connection is open
    own_redis.pause()
    try:
        response, elapsed = timed(lambda: api.get("/customers"), own_redis.resume)
    finally:
        own_redis.resume()
    assert_problem(response, 503, "dependency_unavailable")
    assert elapsed < BOUND, f"answered after {elapsed:.1f}s"


def test_a_hung_postgresql_gives_503_within_seconds(config: Config, app: Flask) -> None:
    api = Api.for_new_tenant(app)
    silent = SilentListener()
    hung = create_app(dataclasses.replace(
        config, database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{silent.port}/nothing"
    ))
    client = Api(hung.test_client(), api.tenant_id, api.test_key, api.live_key)
    try:
        response, elapsed = timed(lambda: client.get("/customers"), silent.close)
    finally:
        silent.close()
    assert_problem(response, 503, "dependency_unavailable")
    assert elapsed < BOUND, f"answered after {elapsed:.1f}s"


def test_a_lock_held_elsewhere_gives_503_within_seconds(app: Flask, container: Container) -> None:
    api = Api.for_new_tenant(app)
    api.ok(api.get("/customers"), 200)
    with container.engine.connect() as holder:
        holder.execute(text("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE"))
        response, elapsed = timed(lambda: api.get("/customers"), holder.rollback)
        holder.rollback()
    assert_problem(response, 503, "dependency_unavailable")
    assert elapsed < BOUND, f"answered after {elapsed:.1f}s"


def test_a_statement_has_a_time_limit(container: Container) -> None:
    limit = container.config.db_statement_timeout_ms / 1000
    started = time.monotonic()
    with (pytest.raises(OperationalError, match="statement timeout"),
          container.engine.connect() as connection):
        connection.execute(text("SELECT pg_sleep(:s)"), {"s": limit + 30})
    assert time.monotonic() - started < limit + 2
