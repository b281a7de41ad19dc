"""The storage behind Idempotency-Key (the rules are in app/api/idempotency.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import IdempotencyKey
from app.models.uow import UnitOfWork
from app.services.scope import Scope


def lock(session: Session, scope: Scope, key: str) -> bool:
    """Take the key's lock for this transaction; False when another request holds it."""
    name = f"{scope.tenant_id}:{int(scope.livemode)}:{key}"
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(
        func.hashtextextended(name, 0)))))


def stored(session: Session, scope: Scope, key: str) -> IdempotencyKey | None:
    """The response stored for this key, if a request with it has completed."""
    return session.get(IdempotencyKey, (scope.tenant_id, scope.livemode, key))


def store(uow: UnitOfWork, scope: Scope, key: str, *, fingerprint: str, status: int,
          body: dict[str, Any], headers: dict[str, str]) -> None:
    """Keep a response for replays, written by the commit of the transaction that did the
    work (in its one statement with the work's new objects and events)."""
    uow.insert(IdempotencyKey(
        tenant_id=scope.tenant_id, livemode=scope.livemode, key=key, request_hash=fingerprint,
        status_code=status, response_body=body, response_headers=headers,
    ))
