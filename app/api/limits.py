"""Rate limits with Flask-Limiter on Redis: one budget per API key for all routes, and one
per client address for the public provider webhooks (`/webhooks/*`, WEBHOOK_RATE_LIMIT).

The hit is one Redis round trip that also returns the window the RateLimit-* headers
report (WindowStorage), and it happens before the view: Redis failing there answers 503 with
nothing written; once the view has run, nothing the limiter does can fail the request (or
half-do it).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Flask, Response, g, request
from flask_limiter import HeaderNames, Limiter
from limits.storage import RedisStorage

from app.api import context
from app.bootstrap import redis_options
from app.config import Config

WEBHOOKS = "/webhooks/"
#: REDIS_URL behind this prefix selects WindowStorage (limits picks storages by URL scheme).
SCHEME_PREFIX = "windowed+"


class WindowStorage(RedisStorage):
    """limits' Redis storage whose hit returns its window's count and expiry too: the same
    request's RateLimit-* headers then read them from here instead of asking Redis twice."""

    STORAGE_SCHEME = [f"{SCHEME_PREFIX}redis", f"{SCHEME_PREFIX}rediss"]
    #: limits' incr_expire.lua, returning the counter's TTL beside its value.
    HIT = b"""
        local count = redis.call("incrby", KEYS[1], ARGV[2])
        if count == tonumber(ARGV[2]) then
            redis.call("expire", KEYS[1], ARGV[1])
        end
        return {count, redis.call("ttl", KEYS[1])}
    """

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri.removeprefix(SCHEME_PREFIX), **options)
        self._hit = self.get_connection().register_script(self.HIT)
        self._last = threading.local()  # (key, count, expires at) of this thread's last hit

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        count, ttl = self._hit([self.prefixed_key(key)], [expiry, amount])
        self._last.window = (key, int(count), time.time() + max(int(ttl), 0))
        return int(count)

    def get(self, key: str) -> int:
        last = getattr(self._last, "window", None)
        return last[1] if last is not None and last[0] == key else super().get(key)

    def get_expiry(self, key: str) -> float:
        last = getattr(self._last, "window", None)
        return last[2] if last is not None and last[0] == key else super().get_expiry(key)


def _key() -> str:
    return context.caller().key_id if "caller" in g else f"address:{request.remote_addr}"


def _limit() -> str:
    config = context.container().config
    if "caller" not in g:
        return config.webhook_rate_limit
    return context.caller().rate_limit or config.default_rate_limit


def _exempt() -> bool:
    """Public endpoints other than the webhooks (health, metrics, docs) are not limited."""
    return "caller" not in g and not request.path.startswith(WEBHOOKS)


def init_limiter(app: Flask, config: Config) -> Limiter:
    """Limit every authenticated request; answers 429 with Retry-After and RateLimit-*."""
    limiter = Limiter(
        key_func=_key,
        application_limits=[_limit],
        application_limits_exempt_when=_exempt,
        storage_uri=SCHEME_PREFIX + config.redis_url,
        storage_options=redis_options(config),
        strategy="fixed-window",
        headers_enabled=True,
        header_name_mapping={
            HeaderNames.LIMIT: "RateLimit-Limit",
            HeaderNames.REMAINING: "RateLimit-Remaining",
            HeaderNames.RESET: "RateLimit-Reset",
            HeaderNames.RETRY_AFTER: "Retry-After",
        },
        key_prefix=f"{config.redis_namespace}-limits",
    )
    app.after_request(_standard_headers)  # registered first, so it runs after the limiter's
    limiter.init_app(app)

    @app.before_request  # registered after the limiter's check, so it runs after it
    def _read_window() -> None:
        """Read the window for the RateLimit-* headers now, not after the view has written
        (the hit's own window; Redis only when a tenant has several limits)."""
        if limiter.current_limit is not None:
            limiter.current_limit.window  # noqa: B018 - cached for the after-request hook

    return limiter


def _standard_headers(response: Response) -> Response:
    """RateLimit-Reset as seconds from now (IETF draft); Retry-After only on 429 and 503."""
    reset = response.headers.get("RateLimit-Reset")
    if reset is not None and reset.isdigit():
        response.headers["RateLimit-Reset"] = str(max(0, int(reset) - int(time.time())))
    if response.status_code not in (429, 503):
        response.headers.pop("Retry-After", None)
    return response
