"""Tenants and API keys: creation by operators, authentication of every request."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cache import Cache
from app.clock import utcnow
from app.ids import new_id
from app.models import ApiKey, Tenant
from app.models.uow import UnitOfWork
from app.services.scope import Scope

#: How much of a key `keys list` shows, to tell keys apart: "sk_test_" and 4 characters.
KEY_PREFIX_LENGTH = 12


@dataclass(frozen=True)
class NewTenant:
    tenant_id: str
    test_key: str
    live_key: str


@dataclass(frozen=True)
class Caller:
    """An authenticated API key."""

    key_id: str
    scope: Scope
    rate_limit: str | None


def hash_key(raw_key: str) -> str:
    """The stored form of an API key: SHA-256 hex (keys are random, so no salt is needed)."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def create_tenant(uow: UnitOfWork, name: str, rate_limit: str | None = None) -> NewTenant:
    """Create a tenant with one test and one live key; the raw keys are shown only here."""
    tenant = Tenant(id=new_id("ten"), name=name, rate_limit=rate_limit)
    uow.session.add(tenant)
    uow.session.flush()
    keys = {livemode: _add_key(uow, tenant.id, livemode)[1] for livemode in (False, True)}
    return NewTenant(tenant_id=tenant.id, test_key=keys[False], live_key=keys[True])


def create_key(uow: UnitOfWork, tenant_id: str, *, livemode: bool) -> tuple[ApiKey, str]:
    """Another key of the tenant in one mode (a rotation's new key): the row and the raw key,
    shown only here. LookupError when there is no such tenant."""
    if uow.session.get(Tenant, tenant_id) is None:
        raise LookupError(f"no tenant {tenant_id}")
    key, raw = _add_key(uow, tenant_id, livemode)
    return key, raw


def list_keys(uow: UnitOfWork, tenant_id: str) -> list[ApiKey]:
    """The tenant's keys, revoked ones included, oldest first; LookupError for no tenant."""
    if uow.session.get(Tenant, tenant_id) is None:
        raise LookupError(f"no tenant {tenant_id}")
    return list(uow.session.scalars(
        select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at, ApiKey.id)
    ))


def revoke_key(uow: UnitOfWork, key_id: str) -> ApiKey:
    """Revoke a key for good (revoking it again changes nothing); LookupError for no key.

    The caller invalidates the key's cache entry after this commits.
    """
    key = uow.session.get(ApiKey, key_id, with_for_update=True)
    if key is None:
        raise LookupError(f"no API key {key_id}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def _add_key(uow: UnitOfWork, tenant_id: str, livemode: bool) -> tuple[ApiKey, str]:
    raw = ("sk_live_" if livemode else "sk_test_") + secrets.token_urlsafe(32)
    key = ApiKey(id=new_id("key"), tenant_id=tenant_id, key_hash=hash_key(raw),
                 livemode=livemode, prefix=raw[:KEY_PREFIX_LENGTH], created_at=utcnow())
    uow.session.add(key)
    return key, raw


def authenticate(session: Session, cache: Cache, raw_key: str) -> Caller | None:
    """The caller behind a raw API key, or None when it is unknown or revoked.

    Both the key and its tenant's settings come through the cache; whoever revokes a key
    or changes a tenant calls cache.invalidate_api_key / invalidate_tenant after commit.
    """
    digest = hash_key(raw_key)
    key = cache.api_key(digest, lambda: _live_key(session, digest))
    if key is None:
        return None
    settings = tenant_settings(session, cache, key["tenant_id"])
    if settings is None:
        return None
    return Caller(key_id=key["key_id"], scope=Scope(key["tenant_id"], key["livemode"]),
                  rate_limit=settings["rate_limit"])


def tenant_settings(session: Session, cache: Cache, tenant_id: str) -> dict[str, Any] | None:
    """A tenant's settings (rate limit, dunning retry days, failover provider), cached."""
    def load() -> dict[str, Any] | None:
        row = session.execute(
            select(Tenant.rate_limit, Tenant.dunning_retry_days, Tenant.failover_provider)
            .where(Tenant.id == tenant_id)
        ).one_or_none()
        return None if row is None else dict(row._mapping)

    return cache.tenant(tenant_id, load)


def _live_key(session: Session, digest: str) -> dict[str, Any] | None:
    row = session.execute(
        select(ApiKey.id.label("key_id"), ApiKey.tenant_id, ApiKey.livemode)
        .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
    ).one_or_none()
    return None if row is None else dict(row._mapping)
