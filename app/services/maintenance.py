"""Housekeeping: retention of stored idempotency responses."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete

from app.clock import utcnow
from app.models import IdempotencyKey
from app.models.uow import UnitOfWork


def prune_idempotency_keys(uow: UnitOfWork, *, hours: int) -> int:
    """Delete stored idempotency responses older than `hours`; returns how many."""
    cutoff = utcnow() - timedelta(hours=hours)
    result = uow.session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
