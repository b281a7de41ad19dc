"""The storage behind Idempotency-Key (the rules are in app/api/idempotency.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.models import IdempotencyKey
from app.models.uow import UnitOfWork
from app.services.scope import Scope

#: Migration 0700's function: the key's advisory lock, then its stored response, if any.
_CLAIM = ("SELECT claimed, request_hash, status_code, response_body, response_headers"
          " FROM idempotency_claim(%s, %s, %s)")


@dataclass(frozen=True)
class Stored:
    """The response kept for a key, and the fingerprint of the request that made it."""

    request_hash: str
    status_code: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass(frozen=True)
class Claim:
    """`claimed`: this transaction holds the key's lock (False: another request does);
    `stored`: the response of the request that completed with this key, if one did."""

    claimed: bool
    stored: Stored | None


def claim(session: Session, scope: Scope, key: str) -> Claim:
    """Take the key's lock for this transaction and read its stored response, in one round
    trip: the read runs after the lock is granted, so it sees a response committed by the
    request that held the lock until then."""
    claimed, request_hash, status, body, headers = session.connection().exec_driver_sql(
        _CLAIM, (scope.tenant_id, scope.livemode, key)).one()
    stored = None if request_hash is None else Stored(request_hash, status, body, headers)
    return Claim(bool(claimed), stored)


def store(uow: UnitOfWork, scope: Scope, key: str, *, fingerprint: str, status: int,
          body: dict[str, Any], headers: dict[str, str]) -> None:
    """Keep a response for replays, written by the commit of the transaction that did the
    work (in its one statement with the work's new objects and events)."""
    uow.insert(IdempotencyKey(
        tenant_id=scope.tenant_id, livemode=scope.livemode, key=key, request_hash=fingerprint,
        status_code=status, response_body=body, response_headers=headers,
    ))
