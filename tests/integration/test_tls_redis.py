"""Redis over TLS: the API's rate limiter, the Dramatiq broker (API and a real worker process)
and the container's client against `redis-server --tls-port` with a certificate of the tests'
CA and no plain port. Trusting another CA fails closed: no connection, the API answers 503."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.api import create_app
from app.bootstrap import build
from app.config import Config
from tests.conftest import start_worker
from tests.integration.checks import assert_problem
from tests.servers import RedisServer
from tests.support import Api
from tests.tls import Authority, authority, wrong_authority  # noqa: F401


@pytest.fixture(scope="module")
def tls_redis(authority: Authority,  # noqa: F811
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module speaking only TLS; its rediss:// URL."""
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), authority.issue("redis"),
                         authority.cert)
    try:
        server.start()
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_config(config: Config, tls_redis: str, authority: Authority) -> Config:  # noqa: F811
    return dataclasses.replace(config, redis_url=tls_redis, redis_ssl_cafile=str(authority.cert))


def test_rate_limits_and_the_broker_work_over_tls(tls_config: Config, tmp_path: Path) -> None:
    api = Api.for_new_tenant(create_app(tls_config), rate_limit="1000/hour")
    payment = api.pay()  # rate-limited and enqueued through the TLS server
    with (tmp_path / "worker.log").open("wb") as log:
        worker = start_worker(tls_config, threads=2, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert api.settled(payment["id"], timeout=30)["status"] == "succeeded"
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    client = build(tls_config).redis
    assert list(client.scan_iter(f"*{tls_config.redis_namespace}-limits*"))  # the counters


def test_a_wrong_ca_fails_closed(tls_config: Config,
                                 wrong_authority: Authority) -> None:  # noqa: F811
    wrong = dataclasses.replace(tls_config, redis_ssl_cafile=str(wrong_authority.cert))
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        build(wrong).redis.ping()
    app = create_app(wrong)
    api = Api.for_new_tenant(app)
    assert_problem(api.post("/customers", {"name": "Ada"}), 503, "dependency_unavailable")


def test_a_ca_for_plain_redis_stops_the_process(config: Config) -> None:
    with pytest.raises(ValueError, match="REDIS_SSL_CAFILE set, but REDIS_URL is not rediss"):
        create_app(dataclasses.replace(config, redis_ssl_cafile="/etc/ssl/ca.pem"))
