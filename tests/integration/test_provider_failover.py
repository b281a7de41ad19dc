"""Failover: a one-time payment whose provider cannot be reached goes to the tenant's
secondary provider, and only then (never a renewal, never after a request may have
reached the provider)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update

from app.bootstrap import Container
from app.config import Config
from app.ids import new_id
from app.models import Tenant
from app.providers.base import ChargeRequest
from app.providers.errors import (
    ProviderUnavailable,
    ProviderUnreachable,
)
from app.services import charge
from tests.sim.fixtures import TOKENS, Merchant, Sims, sim_config_for
from tests.sim.server import closed_port_url


@pytest.fixture(scope="module")
def stripe_down(config: Config, sims: Sims) -> Container:
    """The same engine and database, but Stripe refuses every connection."""
    from app.api import create_app

    app = create_app(sim_config_for(config, sims, "failover-down",
                                    stripe_api_base=closed_port_url()))
    container: Container = app.extensions["container"]
    return container


def charge_with(container: Container, merchant: Merchant, payment_id: str) -> dict[str, Any]:
    # A transient error leaves it processing: the actor is retried.
    charge.charge_payments(container.uow, container.providers, [payment_id],
                           lease_seconds=container.config.payment_lease_seconds)
    return merchant.payment(payment_id)


def fail_over_to(sim_app: Flask, merchant: Merchant, provider: str) -> None:
    result = sim_app.test_cli_runner().invoke(
        args=["providers", "failover", merchant.tenant_id, provider])
    assert result.exit_code == 0, result.output


@pytest.fixture()
def customer(merchant: Merchant) -> Callable[[], tuple[dict[str, Any], dict[str, Any]]]:
    def make() -> tuple[dict[str, Any], dict[str, Any]]:
        stripe = merchant.method("stripe", TOKENS["stripe"]["ok"])
        paypal = merchant.method("paypal", TOKENS["paypal"]["ok"], stripe["customer_id"])
        return stripe, paypal

    return make


def test_an_unreachable_provider_fails_over_to_the_customers_secondary_method(
    merchant: Merchant, sims: Sims, sim_app: Flask, stripe_down: Container,
    customer: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    fail_over_to(sim_app, merchant, "paypal")
    stripe, paypal = customer()
    payment = merchant.pay_with(stripe)
    switched = charge_with(stripe_down, merchant, payment["id"])
    assert switched["status"] == "processing"
    assert switched["payment_method_id"] == paypal["id"]
    settled = charge_with(stripe_down, merchant, payment["id"])  # the actor's retry
    assert settled["status"] == "succeeded"
    assert [(a["provider"], a["status"]) for a in settled["attempts"]] == [
        ("stripe", "failed"), ("paypal", "succeeded")]
    assert sims.ledger("paypal", payment["id"]) == 1
    assert sims.ledger("stripe", payment["id"]) == 0


def test_no_failover_without_the_tenant_setting(
    merchant: Merchant, stripe_down: Container,
    customer: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    stripe, _ = customer()
    payment = charge_with(stripe_down, merchant, merchant.pay_with(stripe)["id"])
    assert (payment["status"], payment["payment_method_id"]) == ("processing", stripe["id"])


def test_no_failover_when_the_request_may_have_reached_the_provider(
    merchant: Merchant, sims: Sims, sim_app: Flask, sim_container: Container,
    stripe_down: Container, customer: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    """Stripe charges, then answers 500; then it cannot be reached. The payment must be
    settled at Stripe, never sent to PayPal as well (that charged the customer twice)."""
    fail_over_to(sim_app, merchant, "paypal")
    stripe, _ = customer()
    payment = merchant.pay_with(stripe)
    sims.stripe.inject("500_after", "/v1/payment_intents/*/confirm")
    charge_with(sim_container, merchant, payment["id"])
    charge_with(stripe_down, merchant, payment["id"])  # a retry, Stripe unreachable
    after = charge_with(sim_container, merchant, payment["id"])  # and the next one
    assert sims.ledger("paypal", payment["id"]) == 0
    assert (after["status"], after["payment_method_id"]) == ("unknown", stripe["id"])
    assert merchant.reconcile(payment["id"])["status"] == "succeeded"
    assert sims.ledger("stripe", payment["id"]) == 1


def test_an_open_breaker_fails_over_too(
    merchant: Merchant, sims: Sims, sim_app: Flask, sim_container: Container,
    customer: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    fail_over_to(sim_app, merchant, "paypal")
    stripe, paypal = customer()  # before the breaker opens: attaching checks with Stripe
    threshold = sim_container.config.breaker_failure_threshold
    sims.stripe.inject("500", "/v1/payment_methods/*", count=threshold)
    for _ in range(threshold):
        payment_id = new_id("pay")
        request = ChargeRequest(
            tenant_id=merchant.tenant_id, livemode=False, payment_id=payment_id, attempt=1,
            idempotency_key=f"{payment_id}:1", amount=100, currency="usd",
            token="pm_card_visa", off_session=False,
        )
        with pytest.raises(ProviderUnavailable):
            sim_container.providers.call("stripe", merchant.tenant_id,
                                         lambda p, r=request: p.charge(r), livemode=False)
    with pytest.raises(ProviderUnreachable, match="circuit open"):
        sim_container.providers.call("stripe", merchant.tenant_id,
                                     lambda p: p.describe("pm_card_visa", livemode=False),
                                     livemode=False)
    payment = merchant.pay_with(stripe)
    switched = charge_with(sim_container, merchant, payment["id"])
    assert switched["payment_method_id"] == paypal["id"]
    assert charge_with(sim_container, merchant, payment["id"])["status"] == "succeeded"
    assert sims.ledger("paypal", payment["id"]) == 1


def test_renewals_never_fail_over(
    merchant: Merchant, sims: Sims, sim_app: Flask, stripe_down: Container,
    customer: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    fail_over_to(sim_app, merchant, "paypal")
    stripe, _ = customer()
    api = merchant.api
    plan = api.ok(api.post("/plans", {"code": new_id("plan"), "name": "Pro", "amount": 900,
                                      "currency": "usd", "interval": "month"}), 201)
    subscription = api.ok(api.post("/subscriptions", {
        "customer_id": stripe["customer_id"], "plan_id": plan["id"],
        "payment_method_id": stripe["id"]}), 201)
    payment = charge_with(stripe_down, merchant, subscription["latest_payment_id"])
    assert payment["subscription_id"] == subscription["id"]
    assert (payment["status"], payment["payment_method_id"]) == ("processing", stripe["id"])


def test_the_sandbox_is_never_a_failover_provider(
    merchant: Merchant, sims: Sims, sim_app: Flask, stripe_down: Container,
    customer: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    refused = sim_app.test_cli_runner().invoke(
        args=["providers", "failover", merchant.tenant_id, "sandbox"])
    assert refused.exit_code != 0
    with merchant.container.session_factory() as session:  # as an older release allowed
        session.execute(update(Tenant).where(Tenant.id == merchant.tenant_id)
                        .values(failover_provider="sandbox"))
        session.commit()
    stripe, _ = customer()
    merchant.method("sandbox", "tok_ok", stripe["customer_id"])
    payment = charge_with(stripe_down, merchant, merchant.pay_with(stripe)["id"])
    assert (payment["status"], payment["payment_method_id"]) == ("processing", stripe["id"])
