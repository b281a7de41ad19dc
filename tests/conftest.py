"""Shared fixtures: a throw-away database and Redis namespace per test session.

Every session gets its own PostgreSQL database (`se_test_<pid>`) migrated with Alembic and
its own Redis key namespace, so tests never touch a developer's data nor each other's runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app.bootstrap import Container, build
from app.config import Config
from app.models.database import drop_database, ensure_database, migrate
from tests.servers import Cluster, streaming_pair
from tests.support import Api, eventually

# Provider simulators and merchants with Stripe / PayPal credentials (module-scoped fixtures).
pytest_plugins = ["tests.sim.fixtures"]

ROOT = Path(__file__).resolve().parents[1]
PG = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432")
REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def config() -> Iterator[Config]:
    """Settings of this test session: own database, own Redis namespace, short timings."""
    run_id = f"{os.getpid()}"
    url = f"{PG}/se_test_{run_id}"
    drop_database(url)
    ensure_database(url)
    migrate(url)
    cfg = Config.from_env(
        {},
        database_url=url,
        redis_url=REDIS,
        redis_namespace=f"se-test-{run_id}",
        engine_env="development",
        payment_lease_seconds=3,
        reconcile_stale_seconds=1,
        reconcile_interval_seconds=0.5,
        charge_min_backoff_ms=20,
        charge_max_backoff_ms=200,
        charge_max_retries=3,
        dramatiq_heartbeat_timeout_ms=5000,
        breaker_failure_threshold=5,
        breaker_recovery_seconds=2,
        metrics_emf="off",  # pytest's stdout is its own; tests/e2e/test_metrics_e2e.py turns it on
    )
    yield cfg
    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(f"{cfg.redis_namespace}*"):
        client.delete(key)
    drop_database(url)


@pytest.fixture(scope="session")
def container(config: Config) -> Container:
    return build(config)


@pytest.fixture(scope="session")
def app(config: Config):  # type: ignore[no-untyped-def]
    from app.api import create_app

    return create_app(config)


@pytest.fixture()
def api(app) -> Api:  # type: ignore[no-untyped-def]
    """A test-mode API client of a brand-new tenant (see tests/support.py)."""
    return Api.for_new_tenant(app)


def child_env(config: Config, **extra: str) -> dict[str, str]:
    """The environment of a process started by a test: this session's settings."""
    return {**os.environ, **config.to_env(), "LOG_LEVEL": "WARNING", **extra}


def start_worker(config: Config, *, threads: int = 4, **popen: Any) -> subprocess.Popen[bytes]:
    """A real Dramatiq worker fleet (`dramatiq app.jobs`, one process) with these settings."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "dramatiq"), "app.jobs", "--processes", "1",
         "--threads", str(threads)],
        env=child_env(config), cwd=ROOT, start_new_session=True, **popen,
    )


@pytest.fixture(scope="session")
def worker(config: Config) -> Iterator[subprocess.Popen[bytes]]:
    """A real Dramatiq worker fleet for this session's broker."""
    process = start_worker(config)
    yield process
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="session")
def streaming() -> Iterator[tuple[Cluster, Cluster]]:
    """A PostgreSQL primary of this session's own and a streaming replica of it."""
    with streaming_pair(Cluster.primary()) as pair:
        yield pair


__all__ = ["eventually"]
