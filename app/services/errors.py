"""Errors a use case raises; the API turns each into its problem+json status."""

from __future__ import annotations


class ServiceError(Exception):
    """Raised when a use case cannot go on; `status` and `code` are the public answer."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class NotFound(ServiceError):
    """Raised when an id is unknown, or belongs to another tenant or mode."""

    status = 404
    code = "resource_missing"


class Conflict(ServiceError):
    """Raised when the object's state does not allow the action."""

    status = 409
    code = "state_conflict"


class Forbidden(ServiceError):
    """Raised when a live key asks for a test-only resource."""

    status = 403
    code = "test_mode_only"


class Invalid(ServiceError):
    """Raised when a value is well-formed but not acceptable; `field` names it."""

    status = 422
    code = "validation_failed"

    def __init__(self, field: str, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field


class Unavailable(ServiceError):
    """Raised when a dependency the request needs (e.g. the payment provider) is down."""

    status = 503
    code = "dependency_unavailable"
