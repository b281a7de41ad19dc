"""Rate limits with Flask-Limiter on Redis: one budget per API key for all routes, and one
per client address for the public provider webhooks (`/webhooks/*`, WEBHOOK_RATE_LIMIT).

Every Redis round trip of the limiter happens before the view: the hit, and the window
that the RateLimit-* headers report. Redis failing there answers 503 with nothing written;
once the view has run, nothing the limiter does can fail the request (or half-do it).
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from flask_limiter import HeaderNames, Limiter

from app.api import context
from app.bootstrap import redis_options
from app.config import Config

WEBHOOKS = "/webhooks/"


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
        storage_uri=config.redis_url,
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
        """Read the window for the RateLimit-* headers now, not after the view has written."""
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
