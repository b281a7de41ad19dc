"""Stripe and PayPal end to end: the API, a real `dramatiq app.jobs` worker fleet and the
SDKs over HTTP to the simulators. Charged once, refunded through the worker, and an answer
lost after the charge is reconciled by the worker's lookup, never charged again."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from app.bootstrap import Container
from app.config import Config
from tests.conftest import start_worker
from tests.sim.fixtures import TOKENS, Merchant, Sims
from tests.support import eventually

PROVIDERS = pytest.mark.parametrize("provider", ["stripe", "paypal"])
MONEY_CALL = {"stripe": "/v1/payment_intents/*/confirm", "paypal": "/v2/checkout/orders/*/capture"}


@pytest.fixture(scope="module")
def sim_worker(sim_config: Config) -> Iterator[subprocess.Popen[bytes]]:
    """A worker fleet on this module's broker namespace, its SDKs pointed at the sims."""
    process = start_worker(sim_config)
    yield process
    process.terminate()
    process.wait(timeout=30)


@PROVIDERS
def test_paid_then_refunded_through_the_worker(
    merchant: Merchant, sims: Sims, sim_worker: object, provider: str
) -> None:
    created = merchant.pay(provider, TOKENS[provider]["ok"], amount=2500)
    payment = merchant.api.settled(created["id"], timeout=30)
    assert payment["status"] == "succeeded"
    assert sims.ledger(provider, payment["id"]) == 1
    refund = merchant.api.ok(merchant.api.post(f"/payments/{payment['id']}/refunds",
                                               {"amount": 1000}), 201)
    refunded = eventually(
        lambda: merchant.payment(payment["id"])["amount_refunded"] == 1000, timeout=30,
        what="the refund to reach the provider")
    assert refunded and refund["amount"] == 1000
    sim = getattr(sims, provider)
    assert len(sim.refunds) >= 1


@PROVIDERS
def test_a_lost_answer_is_reconciled_by_the_worker_and_charged_once(
    merchant: Merchant, sims: Sims, sim_worker: object, sim_container: Container, provider: str
) -> None:
    sim = getattr(sims, provider)
    sim.inject("lost", MONEY_CALL[provider])
    created = merchant.pay(provider, TOKENS[provider]["ok"])
    assert merchant.api.settled(created["id"], timeout=30)["status"] == "unknown"

    # What the scheduler's claim of stale work sends for an `unknown` payment:
    sim_container.enqueue("reconcile_payment", created["id"])
    eventually(lambda: merchant.payment(created["id"])["status"] == "succeeded", timeout=30,
               what="reconciliation")
    assert sims.ledger(provider, created["id"]) == 1
    assert len([r for r in sim.requests_to(MONEY_CALL[provider])
                if created["id"] in str(r.headers)]) == 1


@PROVIDERS
def test_a_rate_limit_is_retried_by_the_worker_after_its_retry_after(
    merchant: Merchant, sims: Sims, sim_worker: object, provider: str
) -> None:
    sim = getattr(sims, provider)
    sim.inject("429", MONEY_CALL[provider], retry_after=1)
    created = merchant.pay(provider, TOKENS[provider]["ok"])
    payment = merchant.api.settled(created["id"], timeout=30)
    assert payment["status"] == "succeeded"
    assert [a["failure_code"] for a in payment["attempts"]] == ["provider_rate_limited", None]
    assert sims.ledger(provider, payment["id"]) == 1
