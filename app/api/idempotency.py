"""Idempotency-Key handling for POSTs: replay, reuse detection and in-flight conflicts.

The first request with a key takes a transaction-scoped advisory lock on (tenant, mode,
key), does its work and stores its response in the same transaction, so the stored
response exists exactly when the work does. A concurrent duplicate fails to take the
lock and gets 409; a later one finds the stored response and gets it back. Only
successful responses are stored: a request that failed wrote nothing and may be retried.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Response, request
from sqlalchemy import func, select

from app.api import context
from app.api.errors import Problem
from app.api.responses import ViewResult, json_response
from app.models import IdempotencyKey

HEADER = "Idempotency-Key"
_VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")


def run(view: Callable[[], ViewResult], *, required: bool, fingerprint: str) -> Response:
    """Run a POST view once per Idempotency-Key and commit its work."""
    key = request.headers.get(HEADER)
    uow = context.uow()
    if key is None:
        if required:
            raise Problem(400, "idempotency_key_required", f"This endpoint requires an {HEADER}.")
        response = json_response(view())
        uow.commit()
        return response
    if not _VALID_KEY.fullmatch(key):
        raise Problem(
            400, "invalid_idempotency_key", f"{HEADER} must be 1-255 printable ASCII characters."
        )
    scope = context.scope()
    lock_name = f"{scope.tenant_id}:{int(scope.livemode)}:{key}"
    locked = uow.session.scalar(
        select(func.pg_try_advisory_xact_lock(func.hashtextextended(lock_name, 0)))
    )
    if not locked:
        raise Problem(
            409,
            "idempotency_key_in_use",
            "A request with this Idempotency-Key is still being processed.",
        )
    stored = uow.session.get(IdempotencyKey, (scope.tenant_id, scope.livemode, key))
    if stored is not None:
        if stored.request_hash != fingerprint:
            raise Problem(
                422,
                "idempotency_key_reuse",
                "This Idempotency-Key was used with a different request.",
            )
        replay = json_response(
            (
                stored.response_body,
                stored.status_code,
                {**stored.response_headers, "Idempotent-Replayed": "true"},
            )
        )
        uow.rollback()
        return replay
    result = view()
    body, status, *rest = result
    uow.session.add(
        IdempotencyKey(
            tenant_id=scope.tenant_id,
            livemode=scope.livemode,
            key=key,
            request_hash=fingerprint,
            status_code=status,
            response_body=body,
            response_headers=rest[0] if rest else {},
        )
    )
    response = json_response(result)
    uow.commit()
    return response
