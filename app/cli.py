"""Operator commands: `tenants create NAME --json` and `db upgrade`, under `flask --app wsgi`."""

from __future__ import annotations

import json

import click
from flask import current_app

from app.bootstrap import Container
from app.models.database import ensure_database, migrate
from app.services.tenants import create_tenant


def _container() -> Container:
    container: Container = current_app.extensions["container"]
    return container


@click.group()
def tenants() -> None:
    """Manage tenants (merchants) and their API keys."""


@tenants.command("create")
@click.argument("name")
@click.option("--rate-limit", default=None, help='Requests per key, e.g. "500/second".')
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
def create(name: str, rate_limit: str | None, as_json: bool) -> None:
    """Create a tenant; prints its id, test key and live key (shown only this once)."""
    with _container().uow() as uow:
        created = create_tenant(uow, name, rate_limit)
    result = {"tenant_id": created.tenant_id, "test_key": created.test_key,
              "live_key": created.live_key}
    if as_json:
        click.echo(json.dumps(result))
    else:
        for label, value in result.items():
            click.echo(f"{label}: {value}")


@click.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
def upgrade() -> None:
    """Create the database if missing and migrate it to the newest revision."""
    url = _container().config.database_url
    if ensure_database(url):
        click.echo("created the database", err=True)
    migrate(url)


COMMANDS = (tenants, db)
