"""Tenants and API keys: creation by operators, authentication of every request."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from app.ids import new_id
from app.models import ApiKey, Tenant
from app.models.uow import UnitOfWork
from app.services.scope import Scope


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
    keys = {}
    for livemode, prefix in ((False, "sk_test_"), (True, "sk_live_")):
        raw = prefix + secrets.token_urlsafe(32)
        uow.session.add(
            ApiKey(id=new_id("key"), tenant_id=tenant.id, key_hash=hash_key(raw), livemode=livemode)
        )
        keys[livemode] = raw
    uow.commit()
    return NewTenant(tenant_id=tenant.id, test_key=keys[False], live_key=keys[True])


def authenticate(uow: UnitOfWork, raw_key: str) -> Caller | None:
    """The caller behind a raw API key, or None when it is unknown or revoked."""
    row = uow.session.execute(
        select(ApiKey.id, ApiKey.tenant_id, ApiKey.livemode, Tenant.rate_limit)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_key(raw_key), ApiKey.revoked_at.is_(None))
    ).one_or_none()
    if row is None:
        return None
    return Caller(
        key_id=row.id, scope=Scope(row.tenant_id, row.livemode), rate_limit=row.rate_limit
    )
