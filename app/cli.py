"""Operator commands under `flask --app wsgi`: `tenants create NAME --json`,
`keys create|list|revoke` (a tenant's API keys), `db upgrade`, and
`providers set|list|remove|failover` (a tenant's Stripe / PayPal credentials)."""

from __future__ import annotations

import json
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from app.bootstrap import Container
from app.models import Tenant
from app.models.database import ensure_database, migrate
from app.providers.credentials import FIELDS, reseal_all
from app.render import timestamp
from app.services.failover import set_failover
from app.services.tenants import create_key, create_tenant, list_keys, revoke_key


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
        uow.commit()
    result = {"tenant_id": created.tenant_id, "test_key": created.test_key,
              "live_key": created.live_key}
    if as_json:
        click.echo(json.dumps(result))
    else:
        for label, value in result.items():
            click.echo(f"{label}: {value}")


@click.group(cls=AppGroup)
def keys() -> None:
    """A tenant's API keys: several per mode, so a key is rotated without downtime (create
    the new one, deploy it, revoke the old one)."""


@keys.command("create")
@click.argument("tenant_id")
@click.option("--mode", type=click.Choice(["test", "live"]), required=True,
              help="Test or live key.")
@click.option("--json", "as_json", is_flag=True, help="Print the key as JSON.")
def create_api_key(tenant_id: str, mode: str, as_json: bool) -> None:
    """Create a key; prints it (the secret is shown only this once)."""
    with _container().uow() as uow:
        try:
            key, raw = create_key(uow, tenant_id, livemode=mode == "live")
        except LookupError as exc:
            raise click.BadParameter(str(exc), param_hint="TENANT_ID") from None
        uow.commit()
        result = {"id": key.id, "tenant_id": key.tenant_id, "livemode": key.livemode,
                  "key": raw, "created_at": timestamp(key.created_at)}
    if as_json:
        click.echo(json.dumps(result))
    else:
        for label, value in result.items():
            click.echo(f"{label}: {value}")


@keys.command("list")
@click.argument("tenant_id")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def list_api_keys(tenant_id: str, as_json: bool) -> None:
    """The tenant's keys, revoked ones too: id, mode, first 12 characters, dates."""
    with _container().uow() as uow:
        try:
            found = [{"id": k.id, "livemode": k.livemode, "prefix": k.prefix,
                      "created_at": timestamp(k.created_at), "revoked_at": timestamp(k.revoked_at)}
                     for k in list_keys(uow, tenant_id)]
        except LookupError as exc:
            raise click.BadParameter(str(exc), param_hint="TENANT_ID") from None
    if as_json:
        click.echo(json.dumps(found))
        return
    for k in found:
        mode = "live" if k["livemode"] else "test"
        revoked = f"revoked {k['revoked_at']}" if k["revoked_at"] else "active"
        click.echo(f"{k['id']}  {mode}  {k['prefix'] or '?'}…  created {k['created_at']}  "
                   f"{revoked}")


@keys.command("revoke")
@click.argument("key_id")
def revoke_api_key(key_id: str) -> None:
    """Revoke a key: every API process answers it 401 within 2 seconds."""
    with _container().uow() as uow:
        try:
            key = revoke_key(uow, key_id)
        except LookupError as exc:
            raise click.BadParameter(str(exc), param_hint="KEY_ID") from None
        uow.commit()
        revoked_at = timestamp(key.revoked_at)
    _container().cache.invalidate_api_key(key.key_hash)
    click.echo(f"{key_id} revoked at {revoked_at}")


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
@click.argument("provider", type=click.Choice(["stripe", "paypal", "none"]))
def failover(tenant_id: str, provider: str) -> None:
    """Send one-time payments to PROVIDER when theirs cannot be reached ("none": never).
    Never the sandbox: it charges no one."""
    with _container().uow() as uow:
        if not set_failover(uow.session, tenant_id, None if provider == "none" else provider):
            raise click.BadParameter(f"no tenant {tenant_id}", param_hint="TENANT_ID")
        uow.commit()
    _container().cache.invalidate_tenant(tenant_id)
    click.echo(f"failover of {tenant_id}: {provider}")


@click.group()
def credentials() -> None:
    """Secrets stored sealed with CREDENTIALS_KEY: providers' credentials, webhook secrets."""


@credentials.command("rotate")
def rotate() -> None:
    """Re-seal every stored secret with the first key of CREDENTIALS_KEY.

    Put NEWKEY,OLDKEY in CREDENTIALS_KEY, restart the processes that read it, run this,
    then put NEWKEY alone: the old key opens nothing still stored.
    """
    container = _container()
    resealed = reseal_all(container.session_factory, container.sealer)
    click.echo(json.dumps({"resealed": resealed}))


COMMANDS = (tenants, keys, db, providers, credentials)
