"""PostgreSQL over TLS: `sslmode=verify-full` and `sslrootcert` in DATABASE_URL reach every
place that connects (creating the database, Alembic's migrations, the app's engine, dropping
it), against a cluster of this module's own with `ssl = on` that accepts no connection without
TLS. Trusting another CA fails closed: no connection, the API answers 503."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.api import create_app
from app.bootstrap import build
from app.config import Config
from app.models.database import drop_database, ensure_database, migrate
from bench.procs import PostgresServer
from tests.integration.checks import assert_problem
from tests.support import Api
from tests.tls import Authority, authority, wrong_authority  # noqa: F401

DATABASE = "se_tls"


@pytest.fixture(scope="module")
def tls_postgres(authority: Authority) -> Iterator[PostgresServer]:  # noqa: F811
    """A cluster with a certificate of `authority`, answering TLS connections only."""
    with tempfile.TemporaryDirectory() as tmp:
        server = PostgresServer(Path(tmp) / "pg")
        server.init()
        issued = authority.issue("postgres")
        for source, name in ((issued.cert, "server.crt"), (issued.key, "server.key")):
            shutil.copy(source, server.data / name)
            shutil.chown(server.data / name, "postgres", "postgres")
            (server.data / name).chmod(0o600)
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        (server.data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
        server.start()
        yield server
        server.stop()


def url(server: PostgresServer, ca: Path) -> str:
    return f"{server.url(DATABASE)}?sslmode=verify-full&sslrootcert={ca}"


@pytest.fixture(scope="module")
def tls_config(config: Config, tls_postgres: PostgresServer,
               authority: Authority) -> Iterator[Config]:  # noqa: F811
    database_url = url(tls_postgres, authority.cert)
    assert ensure_database(database_url)
    migrate(database_url)
    yield dataclasses.replace(config, database_url=database_url)
    drop_database(database_url)


def test_the_app_reads_and_writes_over_verified_tls(tls_config: Config) -> None:
    with build(tls_config).engine.connect() as connection:
        assert connection.scalar(text(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")) is True
    api = Api.for_new_tenant(create_app(tls_config))
    customer = api.customer()
    assert api.ok(api.get(f"/customers/{customer['id']}"), 200)["id"] == customer["id"]


def test_a_wrong_ca_fails_closed(tls_config: Config, tls_postgres: PostgresServer,
                                 wrong_authority: Authority) -> None:  # noqa: F811
    wrong = url(tls_postgres, wrong_authority.cert)
    with pytest.raises(OperationalError, match="certificate verify failed"):
        ensure_database(wrong)
    client = create_app(dataclasses.replace(tls_config, database_url=wrong)).test_client()
    problem = assert_problem(client.get("/customers", headers={"Authorization": "Bearer sk_x"}),
                             503, "dependency_unavailable")
    assert "postgresql" in problem["detail"]
