"""RFC 9457 problem+json for every failure; no input of any shape may produce a 500."""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, json
from flask_limiter import RateLimitExceeded
from limits.errors import StorageError
from sqlalchemy.exc import IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError

from app.services.errors import Invalid, ServiceError

log = logging.getLogger(__name__)
ERROR_BASE = "https://subscription-engine.dev/errors/"
#: A dependency down or hanging: 503, nothing written.
DEPENDENCY_ERRORS = (OperationalError, redis.RedisError, StorageError)
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}
CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class Problem(Exception):
    """Raised by the API layer to answer with a problem+json document."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.errors, self.headers = errors, headers or {}


def problem_response(
    status: int,
    code: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The problem+json response for `status` and a stable machine `code`."""
    body: dict[str, Any] = {
        "type": ERROR_BASE + code,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    response.headers.update(headers or {})
    return response


def register(app: Flask) -> None:
    """Install the handlers that turn every exception into problem+json."""

    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        return problem_response(exc.status, exc.code, exc.detail, exc.errors, exc.headers)

    @app.errorhandler(ServiceError)
    def _service(exc: ServiceError) -> Response:
        errors = [{"field": exc.field, "message": exc.detail}] if isinstance(exc, Invalid) else None
        return problem_response(exc.status, exc.code, exc.detail, errors)

    @app.errorhandler(RateLimitExceeded)
    def _limited(exc: RateLimitExceeded) -> Response:
        return problem_response(429, "rate_limited", f"Rate limit of {exc.description} exceeded.")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {"Allow": ", ".join(exc.valid_methods)} if hasattr(exc, "valid_methods") else {}
        return problem_response(
            status,
            CODES.get(status, "http_error"),
            exc.description or TITLES.get(status, ""),
            headers=headers,
        )

    @app.errorhandler(IntegrityError)
    def _integrity(exc: IntegrityError) -> Response:
        log.info("integrity conflict", extra={"constraint": _constraint(exc)})
        return problem_response(409, "conflict",
                                "The request conflicts with the current state; nothing written.")

    @app.errorhandler(OperationalError)
    @app.errorhandler(redis.RedisError)
    @app.errorhandler(StorageError)
    def _unavailable(exc: Exception) -> Response:
        part = "postgresql" if isinstance(exc, OperationalError) else "redis"
        log.warning("dependency unavailable", extra={"dependency": part})
        return problem_response(
            503,
            "dependency_unavailable",
            f"A dependency ({part}) is unavailable; nothing was written.",
            headers={"Retry-After": "1"},
        )

    @app.errorhandler(InternalServerError)
    def _finalizing(exc: InternalServerError) -> Response:
        """An exception raised after the handlers ran, by an after-request hook: Flask-Limiter
        asks Redis again for the headers of a 503 whose window it could not read."""
        if isinstance(exc.original_exception, DEPENDENCY_ERRORS):
            return _unavailable(exc.original_exception)
        return _http(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return problem_response(500, "internal_error", "An unexpected error occurred.")


def _constraint(exc: IntegrityError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)
