"""The provider registry's breakers: open after the configured failures, then fail fast."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from app.bootstrap import Container
from app.ids import new_id
from app.providers.base import ChargeRequest, ChargeResult
from app.providers.errors import PaymentDeclined, ProviderUnavailable
from app.providers.registry import ProviderRegistry
from app.providers.sandbox import SandboxProvider
from app.services import queries
from app.services.queries import Reader
from app.services.scope import Scope
from tests.support import eventually


def request(tenant_id: str, token: str) -> ChargeRequest:
    payment_id = new_id("pay")
    return ChargeRequest(
        tenant_id=tenant_id, livemode=False, payment_id=payment_id, attempt=1,
        idempotency_key=f"{payment_id}:1", amount=100, currency="usd", token=token,
        off_session=False,
    )


def charge(registry: ProviderRegistry, tenant_id: str, token: str) -> ChargeResult:
    req = request(tenant_id, token)
    return registry.call("sandbox", tenant_id, lambda provider: provider.charge(req))


@pytest.fixture()
def registry(container: Container) -> ProviderRegistry:
    """A registry as the container builds it (threshold 5, recovery 2 s in the test config)."""
    config = container.config
    return ProviderRegistry(
        {"sandbox": SandboxProvider(container.session_factory)},
        failure_threshold=config.breaker_failure_threshold,
        recovery_seconds=config.breaker_recovery_seconds,
    )


def provider_calls() -> float:
    """Calls timed as ProviderCallLatency for the sandbox, in this test process."""
    value = REGISTRY.get_sample_value(
        "subscription_engine_provider_call_latency_seconds_count", {"provider": "sandbox"})
    return value or 0.0


def ledger(container: Container, tenant_id: str) -> int:
    reader = Reader(container.session_factory, container.cache)
    return len(queries.sandbox_charges(reader, Scope(tenant_id, livemode=False), None))


def test_the_breaker_opens_after_the_configured_failures_then_fails_fast(
    container: Container, registry: ProviderRegistry
) -> None:
    tenant = f"ten_{uuid.uuid4().hex[:26]}"
    threshold = container.config.breaker_failure_threshold
    calls_before = provider_calls()
    for _ in range(threshold):
        with pytest.raises(ProviderUnavailable, match="simulated provider error"):
            charge(registry, tenant, "tok_error")
    # Open: even a good card is not sent to the provider.
    for _ in range(3):
        with pytest.raises(ProviderUnavailable, match="circuit open"):
            charge(registry, tenant, "tok_ok")
    assert ledger(container, tenant) == 0
    assert provider_calls() == calls_before + threshold  # only the calls that were made
    registry.sample_breakers()
    assert REGISTRY.get_sample_value(
        "subscription_engine_circuit_breaker_open", {"provider": "sandbox"}) == 1

    # Other tenants are not affected.
    other = f"ten_{uuid.uuid4().hex[:26]}"
    assert charge(registry, other, "tok_ok").status == "succeeded"

    # After the recovery time one trial call goes through, and success closes the breaker.
    def recovered() -> ChargeResult | None:
        try:
            return charge(registry, tenant, "tok_ok")
        except ProviderUnavailable as exc:
            assert "circuit open" in str(exc)
            return None

    assert eventually(recovered, timeout=10, what="the breaker to half-open").status == "succeeded"
    assert charge(registry, tenant, "tok_ok").status == "succeeded"
    assert ledger(container, tenant) == 2


def test_fewer_failures_than_the_threshold_keep_it_closed(
    container: Container, registry: ProviderRegistry
) -> None:
    tenant = f"ten_{uuid.uuid4().hex[:26]}"
    for _ in range(container.config.breaker_failure_threshold - 1):
        with pytest.raises(ProviderUnavailable, match="simulated"):
            charge(registry, tenant, "tok_error")
    assert charge(registry, tenant, "tok_ok").status == "succeeded"


def test_declines_do_not_count_toward_the_breaker(
    container: Container, registry: ProviderRegistry
) -> None:
    tenant = f"ten_{uuid.uuid4().hex[:26]}"
    for _ in range(container.config.breaker_failure_threshold * 2):
        with pytest.raises(PaymentDeclined):
            charge(registry, tenant, "tok_decline")
    assert charge(registry, tenant, "tok_ok").status == "succeeded"
