"""Routing of calls to the right adapter, each behind a circuit breaker per provider and tenant."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from circuitbreaker import CircuitBreaker

from app.providers.base import PaymentProvider
from app.providers.errors import ProviderUnavailable, TransientProviderError

T = TypeVar("T")


class ProviderRegistry:
    """The configured adapters by name, and the breakers that guard them."""

    def __init__(
        self,
        providers: dict[str, PaymentProvider],
        *,
        failure_threshold: int,
        recovery_seconds: int,
    ) -> None:
        self._providers = providers
        self._threshold = failure_threshold
        self._recovery = recovery_seconds
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> PaymentProvider:
        """The adapter called `name`; KeyError when it is not configured."""
        return self._providers[name]

    def __contains__(self, name: str) -> bool:
        return name in self._providers

    def call(self, name: str, tenant_id: str, fn: Callable[[PaymentProvider], T]) -> T:
        """Run `fn(adapter)` through the breaker; an open breaker fails fast as unavailable."""
        breaker = self._breaker(name, tenant_id)
        if breaker.opened:  # breaker.call() runs fn regardless; only its decorator checks
            raise ProviderUnavailable(f"{name}: circuit open, failing fast")
        result: T = breaker.call(fn, self._providers[name])
        return result

    def _breaker(self, name: str, tenant_id: str) -> CircuitBreaker:
        with self._lock:
            key = (name, tenant_id)
            if key not in self._breakers:
                self._breakers[key] = CircuitBreaker(
                    failure_threshold=self._threshold,
                    recovery_timeout=self._recovery,
                    expected_exception=TransientProviderError,
                    name=f"{name}:{tenant_id}",
                )
            return self._breakers[key]
