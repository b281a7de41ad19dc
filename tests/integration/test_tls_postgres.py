"""PostgreSQL over TLS: `sslmode=verify-full` and `sslrootcert` in DATABASE_URL and
DATABASE_REPLICA_URLS reach every place that connects (creating the database, Alembic's
migrations, the app's engine and its replicas' engines, dropping it), against a primary and a
streaming replica of this module's own with `ssl = on` that accept no connection without TLS.
Trusting another CA fails closed: no connection, the API answers 503."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from app.api import create_app
from app.bootstrap import build
from app.config import Config
from app.models.database import drop_database, ensure_database, migrate
from tests.integration.checks import assert_problem
from tests.servers import Cluster, streaming_pair
from tests.support import Api
from tests.tls import Authority, authority, wrong_authority  # noqa: F401

DATABASE = "se_tls"


@pytest.fixture(scope="module")
def tls_clusters(authority: Authority) -> Iterator[tuple[Cluster, Cluster]]:  # noqa: F811
    """A primary with a certificate of `authority`, answering TLS only, and its replica."""
    with streaming_pair(Cluster.primary(tls=authority.issue("postgres"))) as pair:
        yield pair


def url(cluster: Cluster, ca: Path) -> str:
    return f"{cluster.url(DATABASE)}?sslmode=verify-full&sslrootcert={ca}"


@pytest.fixture(scope="module")
def tls_config(config: Config, tls_clusters: tuple[Cluster, Cluster],
               authority: Authority) -> Iterator[Config]:  # noqa: F811
    primary, replica = tls_clusters
    database_url = url(primary, authority.cert)
    assert ensure_database(database_url)
    migrate(database_url)
    yield dataclasses.replace(config, database_url=database_url,
                              database_replica_urls=url(replica, authority.cert))
    drop_database(database_url)


def on_tls(engine: Engine) -> bool:
    with engine.connect() as connection:
        return bool(connection.scalar(text(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")))


def test_the_app_reads_and_writes_over_verified_tls(tls_config: Config) -> None:
    container = build(tls_config)
    assert on_tls(container.engine)
    assert container.replicas is not None
    assert [on_tls(member.engine) for member in container.replicas.replicas] == [True]
    api = Api.for_new_tenant(create_app(tls_config))
    customer = api.customer()
    assert api.ok(api.get(f"/customers/{customer['id']}"), 200)["id"] == customer["id"]


def test_a_wrong_ca_fails_closed(tls_config: Config, tls_clusters: tuple[Cluster, Cluster],
                                 wrong_authority: Authority) -> None:  # noqa: F811
    primary, replica = tls_clusters
    wrong = url(primary, wrong_authority.cert)
    with pytest.raises(OperationalError, match="certificate verify failed"):
        ensure_database(wrong)
    replicas = build(dataclasses.replace(
        tls_config, database_replica_urls=url(replica, wrong_authority.cert))).replicas
    assert replicas is not None
    with pytest.raises(OperationalError, match="certificate verify failed"):
        on_tls(replicas.replicas[0].engine)
    client = create_app(dataclasses.replace(tls_config, database_url=wrong)).test_client()
    problem = assert_problem(client.get("/customers", headers={"Authorization": "Bearer sk_x"}),
                             503, "dependency_unavailable")
    assert "postgresql" in problem["detail"]
