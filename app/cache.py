"""The Redis cache of what hot paths read again and again, shared by every process.

Cached (key → value, each for at most CACHE_TTL_SECONDS):
  api_key          SHA-256 of an API key → its id, tenant and mode (unknown keys are not cached)
  tenant           tenant id → its settings (rate limit, dunning retry days, failover provider)
  plan             (tenant, mode, plan id) → the plan as the API shows it

Whoever changes one of these calls its `invalidate_*` right after the commit that changed
it; the TTL is only the backstop. Invalidating leaves a tombstone for a few seconds and
fills use SET NX, so a request that read the database just before the change cannot put
the old value back. Fills always read the primary. Redis down or slow: every read falls
through to the database, for a second without even asking Redis; a cache never fails a
request.

API keys and tenants, which only operators change, are also remembered by each process for
MEMO_SECONDS, so every request does not pay a round trip for them: a revocation or a new
setting reaches every process within that second (the contract allows 2), the process that
made it at once. Plans are not: a client that changed one through one API process reads its
change through any other at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.services.scope import Scope
from app.telemetry import metrics

log = logging.getLogger(__name__)
Json = dict[str, Any]

#: Connect and answer timeout of the cache's Redis client: a slow Redis must not slow a request.
TIMEOUT_SECONDS = 0.5
#: How long an invalidated entry may not be filled again: longer than any fill's own read.
TOMBSTONE_SECONDS = 10
#: How long the cache is bypassed after Redis failed to answer.
BYPASS_SECONDS = 1.0
_TOMBSTONE = b"-"
#: How long a process answers an entry from its own memory before asking Redis again.
MEMO_SECONDS = 1.0
#: At most this many entries are remembered; the memory is emptied when it is full.
MEMO_ENTRIES = 10_000


def connect(url: str, **options: Any) -> redis.Redis:
    """A Redis client for the cache: `options` (TLS) with shorter timeouts than every other
    client's, and no retries: the database is there."""
    return redis.Redis.from_url(url, **{**options, "socket_timeout": TIMEOUT_SECONDS,
                                        "socket_connect_timeout": TIMEOUT_SECONDS},
                                retry=Retry(NoBackoff(), 0))


class Cache:
    """Read-through entries in Redis under `<namespace>:cache:`; see the module docstring."""

    def __init__(self, client: redis.Redis, namespace: str, ttl_seconds: float) -> None:
        self.client = client
        self._prefix = f"{namespace}:cache:"
        self._ttl_ms = int(ttl_seconds * 1000)
        self._bypass_until = 0.0
        self._memo: dict[str, tuple[float, Json]] = {}  # key -> (remembered until, value)

    def api_key(self, key_hash: str, load: Callable[[], Json | None]) -> Json | None:
        """{"key_id", "tenant_id", "livemode"} of a live API key, or None."""
        return self._through("api_key", key_hash, load, memo=True)

    def invalidate_api_key(self, key_hash: str) -> None:
        self._invalidate("api_key", key_hash)

    def tenant(self, tenant_id: str, load: Callable[[], Json | None]) -> Json | None:
        """A tenant's settings: {"rate_limit", "dunning_retry_days", "failover_provider"}."""
        return self._through("tenant", tenant_id, load, memo=True)

    def invalidate_tenant(self, tenant_id: str) -> None:
        self._invalidate("tenant", tenant_id)

    def plan(self, scope: Scope, plan_id: str, load: Callable[[], Json | None]) -> Json | None:
        """A plan in scope as the API renders it, or None."""
        return self._through("plan", _scoped(scope, plan_id), load)

    def invalidate_plan(self, scope: Scope, plan_id: str) -> None:
        self._invalidate("plan", _scoped(scope, plan_id))

    def _through(self, kind: str, ident: str, load: Callable[[], Json | None], *,
                 memo: bool = False) -> Json | None:
        """The entry from this process's memory (`memo`), else Redis, else `load`."""
        key = f"{self._prefix}{kind}:{ident}"
        now = time.monotonic()
        remembered = self._memo.get(key) if memo else None
        if remembered is not None and remembered[0] > now:
            metrics.count("CacheHits", Cache=kind)
            return remembered[1]
        found = self._call(lambda: self.client.get(key)) if self._ttl_ms > 0 else None
        if isinstance(found, bytes) and found != _TOMBSTONE:
            metrics.count("CacheHits", Cache=kind)
            value: Json = json.loads(found)
            if memo:
                self._remember(key, value, now)
            return value
        metrics.count("CacheMisses", Cache=kind)
        loaded = load()
        if loaded is not None and found is None and self._ttl_ms > 0:
            encoded = json.dumps(loaded, separators=(",", ":"))
            stored = self._call(lambda: self.client.set(key, encoded, px=self._ttl_ms, nx=True))
            if memo and stored:  # not when an invalidation came in between
                self._remember(key, loaded, now)
        return loaded

    def _remember(self, key: str, value: Json, now: float) -> None:
        if len(self._memo) >= MEMO_ENTRIES:
            self._memo.clear()
        self._memo[key] = (now + MEMO_SECONDS, value)

    def _invalidate(self, kind: str, ident: str) -> None:
        key = f"{self._prefix}{kind}:{ident}"
        self._memo.pop(key, None)
        if self._call(lambda: self.client.set(key, _TOMBSTONE, ex=TOMBSTONE_SECONDS),
                      always=True) is None:
            log.error("cache invalidation failed; the entry expires on its TTL",
                      extra={"cache": kind})

    def _call(self, command: Callable[[], Any], *, always: bool = False) -> Any:
        """Run a Redis command; None when Redis is down, slow, or (unless `always`) was
        a moment ago."""
        if not always and time.monotonic() < self._bypass_until:
            return None
        try:
            return command()
        except redis.RedisError as exc:
            self._bypass_until = time.monotonic() + BYPASS_SECONDS
            log.warning("cache unavailable; reading the database",
                        extra={"error": type(exc).__name__})
            return None


def _scoped(scope: Scope, object_id: str) -> str:
    return f"{scope.tenant_id}:{int(scope.livemode)}:{object_id}"
