"""Idempotency-Key handling for POSTs: replay, reuse detection and in-flight conflicts.

The first request with a key takes a transaction-scoped advisory lock on (tenant, mode,
key), reading any stored response in the same round trip, does its work and stores its
response in the same transaction, so the stored response exists exactly when the work does.
A concurrent duplicate fails to take the lock and gets 409; a later one finds the stored
response and gets it back. Only successful responses are stored: a request that failed wrote
nothing and may be retried.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Response, request

from app.api import context
from app.api.errors import Problem
from app.api.responses import ViewResult, json_response
from app.services import idempotency

HEADER = "Idempotency-Key"
#: 1-255 printable ASCII characters; spaces only inside (HTTP strips them at either end).
KEY_PATTERN = r"^[!-~]([ -~]{0,253}[!-~])?$"
_VALID_KEY = re.compile(KEY_PATTERN)


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
            400, "invalid_idempotency_key",
            f"{HEADER} must be 1-255 printable ASCII characters, not starting or ending with "
            "a space.",
        )
    scope = context.scope()
    claim = idempotency.claim(uow.session, scope, key)
    if not claim.claimed:
        raise Problem(
            409,
            "idempotency_key_in_use",
            "A request with this Idempotency-Key is still being processed.",
        )
    if claim.stored is not None:
        stored = claim.stored
        if stored.request_hash != fingerprint:
            raise Problem(
                422,
                "idempotency_key_reuse",
                "This Idempotency-Key was used with a different request.",
            )
        replay = json_response(
            (stored.body, stored.status_code, {**stored.headers, "Idempotent-Replayed": "true"})
        )
        uow.rollback()
        return replay
    result = view()
    body, status, *rest = result
    idempotency.store(uow, scope, key, fingerprint=fingerprint, status=status, body=body,
                      headers=rest[0] if rest else {})
    response = json_response(result)
    uow.commit()
    return response
