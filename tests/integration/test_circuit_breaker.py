"""The provider registry's breakers: open after the configured failures, then fail fast."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from app.bootstrap import Container
from app.ids import new_id
from app.providers.base import ChargeRequest, ChargeResult, PaymentProvider
from app.providers.errors import PaymentDeclined, ProviderUnavailable
from app.providers.registry import ProviderRegistry
from app.providers.sandbox import SandboxProvider
from app.services import charge as charge_service
from app.services import queries
from app.services.queries import Reader
from app.services.scope import Scope
from tests.sim.fixtures import Merchant, Sims
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
    return registry.call("sandbox", tenant_id, lambda provider: provider.charge(req),
                         livemode=False)


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


def provider_down(_: PaymentProvider) -> None:
    raise ProviderUnavailable("simulated outage")


def open_breakers(registry: ProviderRegistry) -> float | None:
    """CircuitBreakerOpen for the sandbox, as the registry's sampler sets it."""
    registry.sample_breakers()
    return REGISTRY.get_sample_value(
        "subscription_engine_circuit_breaker_open", {"provider": "sandbox"})


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
    assert open_breakers(registry) == 0  # a test-mode breaker is the merchant's tests' own

    # The same tenant's live breaker opens on its own, and is the one CircuitBreakerOpen counts.
    for _ in range(threshold):
        with pytest.raises(ProviderUnavailable, match="simulated outage"):
            registry.call("sandbox", tenant, provider_down, livemode=True)
    assert open_breakers(registry) == 1

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


def set_stripe_key(app: Flask, merchant: Merchant, key: str, mode: str = "test") -> None:
    """Store a tenant's Stripe secret key with the operator CLI, as an operator would."""
    result = app.test_cli_runner().invoke(
        args=["providers", "set", merchant.tenant_id, "stripe", "--mode", mode],
        input=json.dumps({"secret_key": key, "webhook_secret": "whsec_x"}))
    assert result.exit_code == 0, result.output


def pay_and_charge(merchant: Merchant, method: dict[str, Any],
                   key: str | None = None) -> dict[str, Any]:
    api = merchant.api
    body = {"amount": 700, "currency": "usd", "customer_id": method["customer_id"],
            "payment_method_id": method["id"]}
    payment = api.ok(api.post("/pay", body, key=key,
                              headers={"Idempotency-Key": uuid.uuid4().hex}), 202)
    c = merchant.container
    charge_service.charge_payments(c.uow, c.providers, [payment["id"]],
                                   lease_seconds=c.config.payment_lease_seconds)
    return api.ok(api.get(f"/payments/{payment['id']}", key=key), 200)


def test_test_traffic_cannot_open_the_breaker_live_charges_use(
    merchant: Merchant, sims: Sims, sim_app: Flask
) -> None:
    api = merchant.api
    set_stripe_key(sim_app, merchant, sims.stripe.new_key(livemode=True), "live")
    live_customer = api.customer(key=api.live_key)
    live_method = api.ok(api.post(f"/customers/{live_customer['id']}/payment-methods",
                                  {"provider": "stripe", "token": "pm_card_visa"},
                                  key=api.live_key), 201)
    threshold = merchant.container.config.breaker_failure_threshold
    test_methods = [merchant.method("stripe", "pm_card_visa") for _ in range(threshold)]
    sims.stripe.inject("500", "/v1/payment_methods/*", count=threshold)
    for method in test_methods:  # test traffic fails until the test-mode breaker opens
        assert pay_and_charge(merchant, method)["status"] == "processing"
    assert [a["failure_code"] for a in pay_and_charge(merchant, test_methods[0])["attempts"]
            ] == ["provider_unavailable"]  # failed fast: the breaker is open
    live = pay_and_charge(merchant, live_method, key=api.live_key)
    assert live["status"] == "succeeded"


def test_rejected_credentials_fail_as_misconfigured_without_opening_the_breaker(
    merchant: Merchant, sim_app: Flask
) -> None:
    threshold = merchant.container.config.breaker_failure_threshold
    methods = [merchant.method("stripe", "pm_card_visa") for _ in range(threshold + 2)]
    set_stripe_key(sim_app, merchant, "sk_test_revoked0000000000")  # Stripe answers 401
    for method in methods[:-1]:
        failed = pay_and_charge(merchant, method)
        assert (failed["status"], failed["failure_code"]) == ("failed", "provider_misconfigured")
    set_stripe_key(sim_app, merchant, merchant.stripe_key)  # the operator fixes it
    assert pay_and_charge(merchant, methods[-1])["status"] == "succeeded"  # breaker closed
