"""The provider conformance suite: the same tests against sandbox, Stripe and PayPal.

Stripe and PayPal are the real SDKs talking HTTP to local simulators, resolved through
the registry from a tenant's stored (encrypted) credentials, exactly as the workers get
them. Each case also checks the provider's own ledger: charged once, or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import pytest
from flask import Flask

from app.bootstrap import Container
from app.ids import new_id
from app.providers.base import ChargeRequest, PaymentProvider, RefundRequest
from app.providers.errors import (
    InvalidPaymentMethod,
    PaymentDeclined,
    ProviderNotConfigured,
    RequestInFlight,
)
from app.providers.sandbox import SandboxProvider
from tests.sim.fixtures import TOKENS, Sims, new_merchant
from tests.support import eventually

MONEY_CALL = {"stripe": ("/v1/payment_intents/*/confirm", "idempotency-key"),
              "paypal": ("/v2/checkout/orders/*/capture", "paypal-request-id")}


@dataclass
class Case:
    name: str
    adapter: PaymentProvider
    tenant_id: str
    tokens: dict[str, str]
    ledger: Callable[[str], int]
    #: Make the next charge's answer come a while after the charge (token `slow`).
    slow_down: Callable[[], None]
    #: Whether the provider has received the money call of this request.
    arrived: Callable[[ChargeRequest], bool]

    def request(self, token: str, *, payment_id: str | None = None, attempt: int = 1,
                amount: int = 1999) -> ChargeRequest:
        payment_id = payment_id or new_id("pay")
        return ChargeRequest(
            tenant_id=self.tenant_id, livemode=False, payment_id=payment_id, attempt=attempt,
            idempotency_key=f"{payment_id}:{attempt}", amount=amount, currency="usd",
            token=self.tokens[token], off_session=False,
        )


@pytest.fixture(scope="module", params=["sandbox", "stripe", "paypal"])
def case(request: pytest.FixtureRequest, sim_app: Flask, sims: Sims) -> Case:
    merchant = new_merchant(sim_app, sims)
    container: Container = sim_app.extensions["container"]
    name: str = request.param
    adapter = container.providers.get(name, merchant.tenant_id)
    if name == "sandbox":
        assert isinstance(adapter, SandboxProvider)
        sandbox = adapter
        return Case(name, adapter, merchant.tenant_id, TOKENS[name], adapter.charge_count,
                    lambda: None, lambda r: sandbox.charge_count(r.payment_id) == 1)
    sim = getattr(sims, name)
    path, header = MONEY_CALL[name]
    return Case(name, adapter, merchant.tenant_id, TOKENS[name],
                lambda payment_id: sims.ledger(name, payment_id),
                lambda: sim.inject("delay", path, seconds=0.5),  # within the SDKs' 1 s
                lambda r: any(seen.headers.get(header) == r.idempotency_key
                              for seen in sim.requests_to(path)))


def test_a_good_method_is_charged_once(case: Case) -> None:
    request = case.request("ok")
    result = case.adapter.charge(request)
    assert result.status == "succeeded" and result.reference
    assert case.ledger(request.payment_id) == 1


def test_resending_the_same_key_returns_the_first_charge(case: Case) -> None:
    request = case.request("ok")
    first = case.adapter.charge(request)
    again = case.adapter.charge(request)
    assert again == first
    assert case.ledger(request.payment_id) == 1


def test_a_key_still_in_flight_is_refused_and_charges_nothing(case: Case) -> None:
    """As Stripe does (409): a second request with the key of one still being answered is
    refused, whatever it would have done; the first answers, and replays, one charge.
    (PayPal's adapter reads the order first and finds it captured: it sends nothing.)"""
    request = case.request("slow")
    case.slow_down()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(case.adapter.charge, request)
        eventually(lambda: case.arrived(request), what="the first request to arrive")
        try:
            second = case.adapter.charge(request)
        except RequestInFlight:
            second = None
        result = first.result()
    assert result.status == "succeeded"
    assert second == (result if case.name == "paypal" else None)
    assert case.adapter.charge(request) == result
    assert case.ledger(request.payment_id) == 1


@pytest.mark.parametrize(("token", "hard"), [("hard", True), ("soft", False)])
def test_declines_are_hard_or_soft_and_charge_nothing(case: Case, token: str, hard: bool) -> None:
    request = case.request(token)
    with pytest.raises(PaymentDeclined) as declined:
        case.adapter.charge(request)
    assert declined.value.hard is hard
    assert declined.value.code and declined.value.message
    with pytest.raises(PaymentDeclined) as replayed:  # the same key: the same answer
        case.adapter.charge(request)
    assert (replayed.value.code, replayed.value.hard) == (declined.value.code, hard)
    assert case.ledger(request.payment_id) == 0


def test_lookup_finds_the_charge_and_never_makes_one(case: Case) -> None:
    charged = case.request("ok")
    result = case.adapter.charge(charged)
    assert case.adapter.lookup(charged) == result
    never_sent = case.request("ok")
    assert case.adapter.lookup(never_sent) is None
    assert case.ledger(never_sent.payment_id) == 0
    assert case.ledger(charged.payment_id) == 1


def test_an_action_needs_the_customer_and_charges_nothing(case: Case) -> None:
    request = case.request("action")
    result = case.adapter.charge(request)
    assert result.status == "requires_action"
    assert result.redirect_url and result.redirect_url.startswith(("http://", "https://"))
    assert case.ledger(request.payment_id) == 0


def test_cancel_stops_a_waiting_attempt_and_returns_a_finished_one(case: Case) -> None:
    waiting = case.request("action")
    action = case.adapter.charge(waiting)
    assert action.status == "requires_action"
    asked = replace(waiting, reference=action.reference)
    assert case.adapter.cancel(asked) is None
    assert case.adapter.cancel(asked) is None  # again: still stopped, nothing taken
    assert case.ledger(waiting.payment_id) == 0

    charged = case.request("ok")
    result = case.adapter.charge(charged)
    assert case.adapter.cancel(charged) == result  # too late: the charge stands
    assert case.ledger(charged.payment_id) == 1


def test_refunds_in_parts_then_refuses_an_over_refund(case: Case) -> None:
    request = case.request("ok", amount=1000)
    reference = case.adapter.charge(request).reference

    def request(refund_id: str, amount: int) -> RefundRequest:
        return RefundRequest(
            tenant_id=case.tenant_id, livemode=False, refund_id=refund_id,
            payment_reference=reference, idempotency_key=refund_id, amount=amount,
            currency="usd",
        )

    def refund(refund_id: str, amount: int) -> str:
        return case.adapter.refund(request(refund_id, amount)).reference

    first_id = new_id("re")
    assert case.adapter.lookup_refund(request(first_id, 400)) is None
    first = refund(first_id, 400)
    assert refund(first_id, 400) == first  # the same key: the same refund
    found = case.adapter.lookup_refund(request(first_id, 400))  # by our refund id
    assert found is not None and found.reference == first
    assert refund(new_id("re"), 600)
    with pytest.raises(PaymentDeclined) as over:
        refund(new_id("re"), 1)
    assert over.value.hard


def test_describe_accepts_its_tokens_and_refuses_others(case: Case) -> None:
    details = case.adapter.describe(case.tokens["ok"], livemode=False)
    assert details.brand
    with pytest.raises(InvalidPaymentMethod):
        case.adapter.describe(case.tokens["unknown"], livemode=False)


def test_the_sandbox_refuses_live_mode_on_every_path(container: Container) -> None:
    sandbox = container.providers.get("sandbox")
    payment_id = new_id("pay")
    live = ChargeRequest(tenant_id=new_id("ten"), livemode=True, payment_id=payment_id,
                         attempt=1, idempotency_key=f"{payment_id}:1", amount=100,
                         currency="usd", token="tok_ok", off_session=True)
    assert [type(r) for r in sandbox.charge_many([live, live])] == [ProviderNotConfigured] * 2
    refund = RefundRequest(tenant_id=live.tenant_id, livemode=True, refund_id=new_id("re"),
                           payment_reference="ch_x", idempotency_key="k", amount=1,
                           currency="usd")
    for call in (lambda: sandbox.charge(live), lambda: sandbox.lookup(live),
                 lambda: sandbox.cancel(live), lambda: sandbox.refund(refund),
                 lambda: sandbox.describe("tok_ok", livemode=True)):
        with pytest.raises((ProviderNotConfigured, InvalidPaymentMethod)):
            call()
    assert isinstance(sandbox, SandboxProvider)
    assert sandbox.charge_count(payment_id) == 0


def test_detaching_what_the_provider_does_not_hold_is_already_done(case: Case) -> None:
    case.adapter.detach(case.tokens["unknown"], livemode=False)
    case.adapter.detach(case.tokens["unknown"], livemode=False)
