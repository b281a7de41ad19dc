"""Fixtures for provider tests: the simulators, an app pointed at them, merchants with keys.

Import the fixtures a module needs (`from tests.sim.fixtures import sims, sim_app, ...`);
each module gets its own simulators, app, container and Redis namespace, so no other
module's worker ever takes its messages.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask

from app.bootstrap import Container
from app.config import Config
from app.models import Payment
from app.services import charge, reconcile
from tests.sim.paypal_sim import PayPalSim
from tests.sim.stripe_sim import StripeSim
from tests.support import Api


@dataclass
class Sims:
    stripe: StripeSim
    paypal: PayPalSim

    def ledger(self, provider: str, payment_id: str) -> int:
        """How many successful charges the provider made for one of our payments."""
        sim = self.stripe if provider == "stripe" else self.paypal
        return len(sim.charges_for(payment_id))


@pytest.fixture(scope="module")
def sims() -> Iterator[Sims]:
    running = Sims(StripeSim().start(), PayPalSim().start())
    yield running
    running.stripe.stop()
    running.paypal.stop()


def sim_config_for(config: Config, sims: Sims, namespace: str, **overrides: Any) -> Config:
    """This session's settings with the SDKs pointed at the simulators."""
    settings: dict[str, Any] = {
        "stripe_api_base": sims.stripe.url,
        "paypal_api_base": sims.paypal.url,
        "provider_timeout_seconds": 1.0,
        "payment_return_url": "https://merchant.example/return",
        "redis_namespace": f"{config.redis_namespace}-{namespace}",
    }
    return dataclasses.replace(config, **{**settings, **overrides})


@pytest.fixture(scope="module")
def sim_config(config: Config, sims: Sims, request: pytest.FixtureRequest) -> Config:
    return sim_config_for(config, sims, request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def sim_app(sim_config: Config) -> Flask:
    from app.api import create_app

    return create_app(sim_config)


@pytest.fixture(scope="module")
def sim_container(sim_app: Flask) -> Container:
    container: Container = sim_app.extensions["container"]
    return container


@dataclass
class Merchant:
    """A tenant with Stripe and PayPal test credentials, talking to the app over its API."""

    api: Api
    container: Container
    sims: Sims
    stripe_key: str
    stripe_webhook_secret: str
    paypal_client: tuple[str, str]
    paypal_webhook_id: str

    @property
    def tenant_id(self) -> str:
        return self.api.tenant_id

    def method(self, provider: str, token: str, customer_id: str | None = None
               ) -> dict[str, Any]:
        """Attach a provider token to a (new) customer through the API."""
        customer_id = customer_id or self.api.customer()["id"]
        body = {"provider": provider, "token": token}
        return self.api.ok(self.api.post(f"/customers/{customer_id}/payment-methods", body), 201)

    def pay(self, provider: str, token: str, amount: int = 1999) -> dict[str, Any]:
        """POST /pay with a new customer's method: the payment, still pending."""
        method = self.method(provider, token)
        return self.pay_with(method, amount)

    def pay_with(self, method: dict[str, Any], amount: int = 1999) -> dict[str, Any]:
        body = {"amount": amount, "currency": "usd", "customer_id": method["customer_id"],
                "payment_method_id": method["id"]}
        response = self.api.post("/pay", body, headers={"Idempotency-Key": uuid.uuid4().hex})
        return self.api.ok(response, 202)

    def charge(self, payment_id: str) -> dict[str, Any]:
        """Run the worker's charge service once, in this process; the payment after it."""
        c = self.container
        # A transient error leaves it processing: the actor would be retried; the caller
        # decides when.
        charge.charge_payments(c.uow, c.providers, [payment_id],
                               lease_seconds=c.config.payment_lease_seconds)
        return self.payment(payment_id)

    def reconcile(self, payment_id: str) -> dict[str, Any]:
        """Run the reconciler's service once for an `unknown` payment."""
        c = self.container
        reconcile.reconcile_payment(c.uow, c.providers, payment_id)
        return self.payment(payment_id)

    def payment(self, payment_id: str) -> dict[str, Any]:
        return self.api.ok(self.api.get(f"/payments/{payment_id}"), 200)

    def updated_at(self, payment_id: str) -> Any:
        with self.container.session_factory() as session:
            return session.get_one(Payment, payment_id).updated_at


def new_merchant(app: Flask, sims: Sims) -> Merchant:
    """A new tenant whose Stripe and PayPal test credentials are set with the operator CLI."""
    api = Api.for_new_tenant(app)
    container: Container = app.extensions["container"]
    stripe_key, secret = sims.stripe.new_key(), "whsec_" + uuid.uuid4().hex
    client_id, client_secret = sims.paypal.new_client()
    webhook_id = sims.paypal.new_webhook(client_id)
    runner = app.test_cli_runner()
    for provider, values in (
        ("stripe", {"secret_key": stripe_key, "webhook_secret": secret}),
        ("paypal", {"client_id": client_id, "client_secret": client_secret,
                    "webhook_id": webhook_id}),
    ):
        result = runner.invoke(args=["providers", "set", api.tenant_id, provider, "--mode",
                                     "test"], input=json.dumps(values))
        assert result.exit_code == 0, (result.output, result.exception)
    return Merchant(api, container, sims, stripe_key, secret, (client_id, client_secret),
                    webhook_id)


@pytest.fixture()
def merchant(sim_app: Flask, sims: Sims) -> Merchant:
    return new_merchant(sim_app, sims)


#: Per provider: tokens of a good card, a hard and a soft decline, an action, and a good card
#: whose answer comes a while after the charge (the simulators: with a `delay` fault).
TOKENS = {
    "sandbox": {"ok": "tok_ok", "hard": "tok_decline", "soft": "tok_insufficient_funds",
                "action": "tok_action", "unknown": "tok_nope", "slow": "tok_slow_1"},
    "stripe": {"ok": "pm_card_visa", "hard": "pm_card_chargeDeclinedStolenCard",
               "soft": "pm_card_chargeDeclinedInsufficientFunds",
               "action": "pm_card_authenticationRequired", "unknown": "pm_missing",
               "slow": "pm_card_visa"},
    "paypal": {"ok": "vault_ok", "hard": "vault_refused", "soft": "vault_declined",
               "action": "vault_action", "unknown": "vault_missing", "slow": "vault_ok"},
}
