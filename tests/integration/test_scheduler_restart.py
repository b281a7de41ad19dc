"""A scheduler job run just after PostgreSQL restarted does its work, instead of failing on
the pooled connection the server dropped.

Measured before (bench/faults.py, a PostgreSQL restart every 7.5 s): every job's first run
after each restart failed with "server closed the connection unexpectedly", logged as an
error with its traceback, and a test clock's lost advance waited one more round for its look.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.bootstrap import Container, build
from app.clock import utcnow
from app.config import Config
from app.models import IdempotencyKey
from app.models.database import ensure_database, migrate
from app.scheduler.runner import build_scheduler
from app.services.tenants import create_tenant
from tests.servers import Cluster, remove


@pytest.fixture
def restartable(config: Config) -> Iterator[tuple[Container, Cluster]]:
    server = Cluster.primary()
    try:
        own = replace(config, database_url=server.url("se"),
                      redis_namespace=f"{config.redis_namespace}-{uuid.uuid4().hex[:6]}")
        ensure_database(own.database_url)
        migrate(own.database_url)
        container = build(own)
        yield container, server
        container.engine.dispose()
    finally:
        remove(server)


def _keys(container: Container) -> int:
    with container.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(IdempotencyKey)) or 0)


def test_a_job_just_after_a_postgresql_restart_does_its_work(
    restartable: tuple[Container, Cluster]
) -> None:
    container, server = restartable
    prune = build_scheduler(container).get_job("prune").func
    with container.uow() as uow:
        tenant = create_tenant(uow, "restart")
        uow.session.add(IdempotencyKey(
            tenant_id=tenant.tenant_id, livemode=False, key="old", request_hash="h",
            status_code=201, response_body={}, response_headers={},
            created_at=utcnow() - timedelta(days=30)))
        uow.commit()
    assert _keys(container) == 1  # the pool now holds a connection to the running server

    server.stop(mode="fast")
    server.start()
    prune(container)
    assert _keys(container) == 0
