"""Routing of calls to the right adapter, each behind a circuit breaker per provider, tenant
and mode (test traffic never opens the breaker live charges use). Only transient errors
count; rejected credentials (ProviderMisconfigured) are a configuration error and do not."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from circuitbreaker import CircuitBreaker

from app.providers.base import ChargeRequest, ChargeResult, PaymentProvider
from app.providers.errors import (
    ProviderError,
    ProviderNotConfigured,
    ProviderUnreachable,
    TransientProviderError,
)
from app.telemetry import metrics
from app.telemetry.catalog import PROVIDERS

T = TypeVar("T")
#: (provider name, tenant id) -> that tenant's adapter, or None when it has no credentials.
TenantResolver = Callable[[str, str], PaymentProvider | None]


class ProviderRegistry:
    """The adapters: shared ones by name (sandbox), per-tenant ones (Stripe, PayPal) resolved
    from each tenant's credentials, and the breakers that guard them."""

    def __init__(
        self,
        providers: dict[str, PaymentProvider],
        *,
        failure_threshold: int,
        recovery_seconds: int,
        tenant_providers: TenantResolver | None = None,
    ) -> None:
        self._providers = providers
        self._tenant_providers = tenant_providers
        self._threshold = failure_threshold
        self._recovery = recovery_seconds
        self._breakers: dict[tuple[str, str, bool], CircuitBreaker] = {}
        self._lock = threading.Lock()
        metrics.sampler(self.sample_breakers)

    def get(self, name: str, tenant_id: str | None = None) -> PaymentProvider:
        """The adapter called `name` (for this tenant); ProviderNotConfigured when none is."""
        if name in self._providers:
            return self._providers[name]
        if tenant_id is not None and self._tenant_providers is not None:
            found = self._tenant_providers(name, tenant_id)
            if found is not None:
                return found
        raise ProviderNotConfigured(f"The {name} provider is not configured for this tenant.")

    def configured(self, name: str, tenant_id: str) -> bool:
        """Whether `name` can be used by this tenant (in at least one mode)."""
        try:
            self.get(name, tenant_id)
        except ProviderNotConfigured:
            return False
        return True

    def __contains__(self, name: str) -> bool:
        return name in self._providers

    def call(self, name: str, tenant_id: str, fn: Callable[[PaymentProvider], T], *,
             livemode: bool) -> T:
        """Run `fn(adapter)` through the breaker of this provider, tenant and mode; an open
        breaker fails fast as unreachable."""
        adapter = self.get(name, tenant_id)
        breaker = self._breaker(name, tenant_id, livemode)
        if breaker.opened:  # breaker.call() runs fn regardless; only its decorator checks
            raise ProviderUnreachable(f"{name}: circuit open, failing fast")
        with metrics.timer("ProviderCallLatency", Provider=name):
            result: T = breaker.call(fn, adapter)
        return result

    def charge_many(
        self, name: str, tenant_id: str, livemode: bool, requests: Sequence[ChargeRequest]
    ) -> list[ChargeResult | ProviderError]:
        """Charge a batch at one provider for one tenant in one mode, each result counted by
        the breaker as one call; an open breaker fails them all fast as unreachable."""
        assert all(r.livemode is livemode for r in requests)
        try:
            adapter = self.get(name, tenant_id)
        except ProviderNotConfigured as exc:
            return [exc] * len(requests)
        breaker = self._breaker(name, tenant_id, livemode)
        if breaker.opened:
            return [ProviderUnreachable(f"{name}: circuit open, failing fast")] * len(requests)
        with metrics.timer("ProviderCallLatency", Provider=name):
            results = adapter.charge_many(requests)
        for result in results:
            try:
                with breaker:  # counts an expected (transient) error, resets on anything else
                    if isinstance(result, ProviderError):
                        raise result
            except ProviderError:
                pass
        return results

    def sample_breakers(self) -> None:
        """CircuitBreakerOpen: how many live-mode breakers (one per tenant) are open, per
        provider; a test-mode breaker guards a merchant's tests, not payments."""
        with self._lock:
            open_names = [name for (name, _, live), b in self._breakers.items()
                          if live and b.opened]
        for provider in PROVIDERS:
            metrics.gauge("CircuitBreakerOpen", open_names.count(provider), Provider=provider)

    def _breaker(self, name: str, tenant_id: str, livemode: bool) -> CircuitBreaker:
        with self._lock:
            key = (name, tenant_id, livemode)
            if key not in self._breakers:
                self._breakers[key] = CircuitBreaker(
                    failure_threshold=self._threshold,
                    recovery_timeout=self._recovery,
                    expected_exception=TransientProviderError,
                    name=f"{name}:{tenant_id}:{'live' if livemode else 'test'}",
                )
            return self._breakers[key]
