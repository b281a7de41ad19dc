"""Bearer API keys: every endpoint but the public ones needs one."""

from __future__ import annotations

import time

from flask import g, request

from app.api import context
from app.api.errors import Problem
from app.services.tenants import Caller, authenticate, hash_key

PUBLIC_PREFIXES = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/webhooks/")
_CACHE_LIMIT = 10_000
_cache: dict[str, tuple[float, Caller]] = {}  # key hash -> (expiry, caller), per process


def _cached_authenticate(raw_key: str) -> Caller | None:
    """authenticate(), remembering known keys for AUTH_CACHE_SECONDS (0 turns it off).

    Saves a database round trip per request; a revoked key or a changed rate limit takes
    effect within that many seconds. Unknown keys are never cached.
    """
    ttl = context.container().config.auth_cache_seconds
    digest = hash_key(raw_key)
    now = time.monotonic()
    hit = _cache.get(digest)
    if hit is not None and hit[0] > now:
        return hit[1]
    found = authenticate(context.uow(), raw_key)
    if found is not None and ttl > 0:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[digest] = (now + ttl, found)
    return found


def authenticate_request() -> None:
    """Resolve the caller from `Authorization: Bearer <key>`; 401 when absent or unknown."""
    if request.path.startswith(PUBLIC_PREFIXES):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, raw_key = header.partition(" ")
    if scheme.lower() != "bearer" or not raw_key.strip():
        raise Problem(
            401,
            "unauthorized",
            "Send your API key as 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    found = _cached_authenticate(raw_key.strip())
    if found is None:
        raise Problem(
            401,
            "unauthorized",
            "The API key is unknown or revoked.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    g.caller = found
