"""Operator commands under `flask --app wsgi`: `tenants create NAME --json`, `db upgrade`,
and `providers set|list|remove|failover` (a tenant's Stripe / PayPal credentials)."""

from __future__ import annotations

import json
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from app.bootstrap import Container
from app.models import Tenant
from app.models.database import ensure_database, migrate
from app.providers.credentials import FIELDS
from app.services.failover import set_failover
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


@click.group(cls=AppGroup)
def providers() -> None:
    """A tenant's Stripe and PayPal credentials (stored encrypted) and its failover."""


MODE = click.option("--mode", type=click.Choice(["test", "live"]), default="test",
                    show_default=True, help="Which API keys of the tenant use these.")


def _known_tenant(tenant_id: str) -> None:
    with _container().uow() as uow:
        if uow.session.get(Tenant, tenant_id) is None:
            raise click.BadParameter(f"no tenant {tenant_id}", param_hint="TENANT_ID")


@providers.command("set")
@click.argument("tenant_id")
@click.argument("provider", type=click.Choice(sorted(FIELDS)))
@MODE
def set_credentials(tenant_id: str, provider: str, mode: str) -> None:
    """Store credentials read as a JSON object from stdin (never from arguments).

    stripe: {"secret_key": "sk_…", "webhook_secret": "whsec_…"};
    paypal: {"client_id": "…", "client_secret": "…", "webhook_id": "…"}.
    """
    _known_tenant(tenant_id)
    try:
        given = json.loads(sys.stdin.read())
    except ValueError:
        given = None
    if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
        raise click.UsageError("credentials not saved: send a JSON object of strings on stdin")
    try:
        _container().credentials.save(tenant_id, provider, livemode=mode == "live",
                                      values=given)
    except ValueError as exc:
        raise click.UsageError(f"credentials not saved: {exc}") from None
    click.echo(f"{provider} {mode} credentials saved for {tenant_id}")


@providers.command("list")
@click.argument("tenant_id")
def list_credentials(tenant_id: str) -> None:
    """Which providers and modes have credentials (the secrets are never shown)."""
    for provider, livemode in _container().credentials.configured(tenant_id):
        click.echo(f"{provider} {'live' if livemode else 'test'}")


@providers.command("remove")
@click.argument("tenant_id")
@click.argument("provider", type=click.Choice(sorted(FIELDS)))
@MODE
def remove_credentials(tenant_id: str, provider: str, mode: str) -> None:
    """Forget a provider's credentials for one mode."""
    gone = _container().credentials.remove(tenant_id, provider, livemode=mode == "live")
    click.echo(f"{provider} {mode} credentials {'removed' if gone else 'were not set'}")


@providers.command("failover")
@click.argument("tenant_id")
@click.argument("provider", type=click.Choice(["stripe", "paypal", "sandbox", "none"]))
def failover(tenant_id: str, provider: str) -> None:
    """Send one-time payments to PROVIDER when theirs cannot be reached ("none": never)."""
    with _container().uow() as uow:
        if not set_failover(uow.session, tenant_id, None if provider == "none" else provider):
            raise click.BadParameter(f"no tenant {tenant_id}", param_hint="TENANT_ID")
        uow.commit()
    click.echo(f"failover of {tenant_id}: {provider}")


COMMANDS = (tenants, db, providers)
