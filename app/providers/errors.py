"""Our error hierarchy for providers; no SDK exception escapes an adapter."""

from __future__ import annotations


class ProviderError(Exception):
    """Raised when a provider call did not end in a charge or refund; base of all below."""

    code = "provider_error"


class PaymentDeclined(ProviderError):
    """Raised when the provider refused the charge; `hard` declines are never retried."""

    def __init__(self, code: str, message: str, *, hard: bool) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hard = hard


class TransientProviderError(ProviderError):
    """Raised when the provider did not process the request and a new attempt may succeed."""


class ProviderUnavailable(TransientProviderError):
    """Raised when the provider answered 5xx, could not be reached, or its breaker is open."""

    code = "provider_unavailable"


class ProviderRateLimited(TransientProviderError):
    """Raised when the provider answered 429; `retry_after` is its hint in seconds."""

    code = "provider_rate_limited"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutcomeUnknown(ProviderError):
    """Raised when the request may have reached the provider but its answer was lost.

    `reference`: the provider's id of what the attempt acts on, when an earlier answer told
    it (PayPal's order), so that `lookup` can read it directly, whenever it runs.
    """

    code = "outcome_unknown"

    def __init__(self, message: str, reference: str | None = None) -> None:
        super().__init__(message)
        self.reference = reference


class RequestInFlight(OutcomeUnknown):
    """Raised when the provider refused a request because another with the same idempotency
    key is still in flight (Stripe's 409): that one may charge, so the outcome is unknown."""

    code = "request_in_flight"


class InvalidPaymentMethod(ProviderError):
    """Raised when a token cannot be attached: unknown to the provider or not allowed here."""

    code = "invalid_payment_method"


class ProviderUnreachable(ProviderUnavailable):
    """Raised when the request never reached the provider (connection refused, breaker open).

    Unlike other unavailability, nothing can have been charged, so a one-time payment may
    safely be sent to another provider instead.
    """


class ProviderMisconfigured(ProviderError):
    """Raised when the provider refused our credentials (401/403): a configuration error for
    an operator to fix, not an outage; it is not retried and does not open a breaker."""

    code = "provider_misconfigured"


class ProviderNotConfigured(ProviderError):
    """Raised when a tenant has no credentials for a provider in the request's mode."""

    code = "provider_not_configured"


class WebhookRejected(ProviderError):
    """Raised when a webhook's signature is missing or wrong, or it cannot be verified."""

    code = "webhook_rejected"
