"""Faults between us and Stripe / PayPal: whatever breaks, a payment is charged once.

Payments go in through the API; the worker's charge service and the reconciler's service
run in this process against the simulators (the SDKs over real HTTP), so each step's
outcome can be checked: 500s and 429s are retried as new attempts; a reset or a timeout
leaves the payment `unknown` until reconciliation looks it up (and re-sends the same key
only when the provider never saw it); an answer lost after the charge reconciles to
succeeded without another charge.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Update, update

from app.clock import utcnow
from app.ids import new_id
from app.models import PaymentAttempt, Refund
from app.models.uow import UnitOfWork
from app.providers.base import ChargeRequest
from app.providers.errors import OutcomeUnknown, PaymentDeclined, ProviderRateLimited
from app.services import charge, reconcile, refunds
from tests.sim.fixtures import TOKENS, Merchant, Sims
from tests.sim.paypal_sim import PayPalSim
from tests.sim.stripe_sim import StripeSim
from tests.support import eventually

MONEY_CALL = {"stripe": "/v1/payment_intents/*/confirm", "paypal": "/v2/checkout/orders/*/capture"}
FIRST_CALL = {"stripe": "/v1/payment_methods/*", "paypal": "/v2/checkout/orders"}
PROVIDERS = pytest.mark.parametrize("provider", ["stripe", "paypal"])


def statuses(payment: dict[str, object]) -> list[object]:
    attempts = payment["attempts"]
    assert isinstance(attempts, list)
    return [a["status"] for a in attempts]


def keys_sent(sim: StripeSim | PayPalSim, provider: str, payment_id: str) -> list[str]:
    """The idempotency keys of every charge call the provider received for one payment."""
    header = "idempotency-key" if provider == "stripe" else "paypal-request-id"
    keys = [r.headers.get(header, "") for r in sim.requests_to(MONEY_CALL[provider])]
    return [k for k in keys if k.startswith(f"{payment_id}:")]


def charge_request(merchant: Merchant, provider: str, *, payment_id: str | None = None,
                   attempt: int = 1, amount: int = 500, currency: str = "usd",
                   off_session: bool = False) -> ChargeRequest:
    """An attempt to charge the provider's good test method, sent to the adapter directly."""
    payment_id = payment_id or new_id("pay")
    return ChargeRequest(
        tenant_id=merchant.tenant_id, livemode=False, payment_id=payment_id, attempt=attempt,
        idempotency_key=f"{payment_id}:{attempt}", amount=amount, currency=currency,
        token=TOKENS[provider]["ok"], off_session=off_session,
    )


def sent_past_the_window(merchant: Merchant, provider: str, payment_id: str) -> None:
    """Date the payment's attempts back beyond the provider's idempotency-key window."""
    _date_back(merchant, provider, update(PaymentAttempt)
               .where(PaymentAttempt.payment_id == payment_id))


def _date_back(merchant: Merchant, provider: str, rows: Update) -> None:
    """Set `created_at` of `rows` to a minute before the provider's idempotency-key window."""
    window = merchant.container.providers.get(provider, merchant.tenant_id).idempotency_window
    assert window is not None
    with merchant.container.session_factory() as session:
        session.execute(rows.values(created_at=utcnow() - window - timedelta(minutes=1)))
        session.commit()


@pytest.fixture(autouse=True)
def _no_leftover_faults(sims: Sims) -> None:
    sims.stripe.clear_faults()
    sims.paypal.clear_faults()


@PROVIDERS
def test_a_500_before_the_charge_is_retried_as_a_new_attempt_and_charged_once(
    merchant: Merchant, sims: Sims, provider: str
) -> None:
    sim = getattr(sims, provider)
    payment = merchant.pay(provider, TOKENS[provider]["ok"])
    sim.inject("500", FIRST_CALL[provider])  # moves no money: nothing can have been charged
    after_500 = merchant.charge(payment["id"])
    assert after_500["status"] == "processing"
    assert [a["failure_code"] for a in after_500["attempts"]] == ["provider_unavailable"]
    settled = merchant.charge(payment["id"])  # the actor's retry
    assert settled["status"] == "succeeded"
    assert statuses(settled) == ["failed", "succeeded"]
    assert sims.ledger(provider, payment["id"]) == 1


@PROVIDERS
@pytest.mark.parametrize("fault", ["500", "500_after"])
def test_a_500_on_the_charge_is_unknown_and_settled_at_that_provider(
    merchant: Merchant, sims: Sims, provider: str, fault: str
) -> None:
    """A 5xx on the call that moves money may come after the charge (`500_after`): the
    outcome is unknown, and the provider's own record settles it, with the same key."""
    sim = getattr(sims, provider)
    payment = merchant.pay(provider, TOKENS[provider]["ok"])
    sim.inject(fault, MONEY_CALL[provider])
    assert merchant.charge(payment["id"])["status"] == "unknown"
    reconciled = merchant.reconcile(payment["id"])
    if fault == "500":  # nothing there: sent again, same key
        assert reconciled["status"] == "processing"
        reconciled = merchant.charge(payment["id"])
    assert reconciled["status"] == "succeeded"
    assert statuses(reconciled) == ["succeeded"]
    assert set(keys_sent(sim, provider, payment["id"])) == {f"{payment['id']}:1"}
    assert sims.ledger(provider, payment["id"]) == 1


@PROVIDERS
def test_a_429_carries_retry_after_and_is_retried(
    merchant: Merchant, sims: Sims, provider: str
) -> None:
    sim = getattr(sims, provider)
    adapter = merchant.container.providers.get(provider, merchant.tenant_id)
    request = charge_request(merchant, provider)
    sim.inject("429", FIRST_CALL[provider], retry_after=7)
    with pytest.raises(ProviderRateLimited) as limited:
        adapter.charge(request)
    assert limited.value.retry_after == 7
    assert adapter.charge(request).status == "succeeded"
    assert sims.ledger(provider, request.payment_id) == 1

    payment = merchant.pay(provider, TOKENS[provider]["ok"])
    sim.inject("429", MONEY_CALL[provider], retry_after=2)
    c = merchant.container
    [retry] = charge.charge_payments(c.uow, c.providers, [payment["id"]],
                                     lease_seconds=c.config.payment_lease_seconds)
    raised = charge.error_of(retry)  # the actor retries after 2 s
    assert isinstance(raised, ProviderRateLimited) and raised.retry_after == 2
    assert merchant.payment(payment["id"])["attempts"][0]["failure_code"] == \
        "provider_rate_limited"
    assert merchant.charge(payment["id"])["status"] == "processing"  # not before 2 s
    eventually(lambda: merchant.charge(payment["id"])["status"] == "succeeded", 10,
               what="the retry after Retry-After")
    assert sims.ledger(provider, payment["id"]) == 1


def redriven(merchant: Merchant) -> list[tuple[object, ...]]:
    """What the scheduler's reconciliation pass would re-drive now (stale at once)."""
    sent: list[tuple[object, ...]] = []
    with UnitOfWork(merchant.container.session_factory, lambda *args, **_: sent.append(args)) \
            as uow:
        reconcile.claim_stale_work(uow, stale_seconds=0, batch=10_000)
        uow.commit()
    return sent


@PROVIDERS
def test_no_path_re_drives_a_payment_before_the_providers_retry_after(
    merchant: Merchant, sims: Sims, provider: str
) -> None:
    sim = getattr(sims, provider)
    charged = merchant.pay(provider, TOKENS[provider]["ok"])
    sim.inject("429", MONEY_CALL[provider], retry_after=120)
    assert merchant.charge(charged["id"])["status"] == "processing"
    lost = merchant.pay(provider, TOKENS[provider]["ok"])
    sim.inject("lost", MONEY_CALL[provider])
    assert merchant.charge(lost["id"])["status"] == "unknown"
    sim.inject("429", "*", method="GET", retry_after=120)  # every lookup
    assert merchant.reconcile(lost["id"])["status"] == "unknown"  # the lookup was refused
    sim.clear_faults()
    waiting = {charged["id"], lost["id"]}
    assert not waiting & {args[1] for args in redriven(merchant)}
    assert merchant.charge(charged["id"])["status"] == "processing"  # the actor's retry
    assert len(keys_sent(sim, provider, charged["id"])) == 1


@PROVIDERS
def test_a_reset_before_processing_reconciles_by_resending_the_same_key(
    merchant: Merchant, sims: Sims, provider: str
) -> None:
    sim = getattr(sims, provider)
    payment = merchant.pay(provider, TOKENS[provider]["ok"])
    sim.inject("reset", MONEY_CALL[provider])
    assert merchant.charge(payment["id"])["status"] == "unknown"
    assert sims.ledger(provider, payment["id"]) == 0
    # The provider never saw it: reconciliation hands it back to be re-sent, same key.
    assert merchant.reconcile(payment["id"])["status"] == "processing"
    settled = merchant.charge(payment["id"])
    assert settled["status"] == "succeeded"
    assert statuses(settled) == ["succeeded"]  # one attempt: the same key, re-sent
    assert keys_sent(sim, provider, payment["id"]) == [f"{payment['id']}:1"] * 2
    assert sims.ledger(provider, payment["id"]) == 1


@PROVIDERS
def test_an_attempt_older_than_the_providers_idempotency_window_is_never_sent_again(
    merchant: Merchant, sims: Sims, provider: str
) -> None:
    sim = getattr(sims, provider)
    payment = merchant.pay(provider, TOKENS[provider]["ok"])
    sim.inject("reset", MONEY_CALL[provider])
    assert merchant.charge(payment["id"])["status"] == "unknown"
    sent_past_the_window(merchant, provider, payment["id"])
    assert merchant.reconcile(payment["id"])["status"] == "unknown"  # left for a person
    assert keys_sent(sim, provider, payment["id"]) == [f"{payment['id']}:1"]
    assert sims.ledger(provider, payment["id"]) == 0


def test_a_paypal_capture_whose_answer_was_lost_is_found_after_the_request_ids_expired(
    merchant: Merchant, sims: Sims
) -> None:
    payment = merchant.pay("paypal", TOKENS["paypal"]["ok"])
    sims.paypal.inject("lost", MONEY_CALL["paypal"])
    assert merchant.charge(payment["id"])["status"] == "unknown"
    order = sims.paypal.order_for(payment["id"])
    # Reconciliation could not run for 6 hours: replaying the order's creation would now
    # make a new, empty order. The attempt kept the order's id, which finds the capture.
    sims.paypal.forget_request_ids()
    sent_past_the_window(merchant, "paypal", payment["id"])
    settled = merchant.reconcile(payment["id"])
    assert settled["status"] == "succeeded"
    assert statuses(settled) == ["succeeded"]
    assert keys_sent(sims.paypal, "paypal", payment["id"]) == [f"{payment['id']}:1"]
    assert sims.ledger("paypal", payment["id"]) == 1
    assert [o["id"] for o in sims.paypal.orders.values()
            if o["purchase_units"][0].get("custom_id") == payment["id"]] == [order["id"]]


def test_a_paypal_capture_resent_after_the_request_ids_expired_is_unknown_not_declined(
    merchant: Merchant, sims: Sims
) -> None:
    adapter = merchant.container.providers.get("paypal", merchant.tenant_id)
    request = charge_request(merchant, "paypal", off_session=True)
    sims.paypal.inject("lost", MONEY_CALL["paypal"])
    with pytest.raises(OutcomeUnknown):  # captured; the worker dies before recording it
        adapter.charge(request)
    sims.paypal.forget_request_ids()  # nothing ran for 6 hours
    with pytest.raises(OutcomeUnknown):  # a new order, refused: the invoice id was paid
        adapter.charge(request)
    assert sims.ledger("paypal", request.payment_id) == 1


@PROVIDERS
def test_an_answer_lost_after_the_charge_reconciles_without_charging_again(
    merchant: Merchant, sims: Sims, provider: str
) -> None:
    sim = getattr(sims, provider)
    payment = merchant.pay(provider, TOKENS[provider]["ok"])
    sim.inject("lost", MONEY_CALL[provider])
    assert merchant.charge(payment["id"])["status"] == "unknown"
    assert sims.ledger(provider, payment["id"]) == 1
    settled = merchant.reconcile(payment["id"])
    assert settled["status"] == "succeeded"
    assert statuses(settled) == ["succeeded"]
    assert keys_sent(sim, provider, payment["id"]) == [f"{payment['id']}:1"]  # found, not re-sent
    assert sims.ledger(provider, payment["id"]) == 1


@PROVIDERS
def test_a_timeout_after_sending_is_unknown_then_reconciled(
    merchant: Merchant, sims: Sims, provider: str
) -> None:
    sim = getattr(sims, provider)
    payment = merchant.pay(provider, TOKENS[provider]["ok"])
    sim.inject("delay", MONEY_CALL[provider], seconds=1.5)  # the SDKs wait 1 s here
    assert merchant.charge(payment["id"])["status"] == "unknown"
    assert merchant.reconcile(payment["id"])["status"] == "succeeded"
    assert sims.ledger(provider, payment["id"]) == 1


@PROVIDERS
def test_a_500_after_the_charge_never_charges_twice(
    merchant: Merchant, sims: Sims, provider: str
) -> None:
    """A provider may fail with 500 *after* charging; the next attempt, under a new key,
    finds the payment's intent or order already paid instead of paying again."""
    sim = getattr(sims, provider)
    payment = merchant.pay(provider, TOKENS[provider]["ok"])
    sim.inject("lost", MONEY_CALL[provider])
    assert merchant.charge(payment["id"])["status"] == "unknown"
    # Pretend the reconciler was told "never seen" and a new attempt was made anyway.
    adapter = merchant.container.providers.get(provider, merchant.tenant_id)
    second = charge_request(merchant, provider, payment_id=payment["id"], attempt=2,
                            amount=1999)
    assert adapter.charge(second).status == "succeeded"
    assert sims.ledger(provider, payment["id"]) == 1


@PROVIDERS
def test_declines_settle_the_payment_hard_or_soft(
    merchant: Merchant, sims: Sims, provider: str
) -> None:
    hard = merchant.charge(merchant.pay(provider, TOKENS[provider]["hard"])["id"])
    soft = merchant.charge(merchant.pay(provider, TOKENS[provider]["soft"])["id"])
    assert (hard["status"], soft["status"]) == ("failed", "failed")
    assert hard["failure_code"] in ("stolen_card", "transaction_refused")
    assert soft["failure_code"] in ("insufficient_funds", "instrument_declined")
    assert sims.ledger(provider, hard["id"]) + sims.ledger(provider, soft["id"]) == 0


@PROVIDERS
def test_a_batch_is_charged_concurrently(merchant: Merchant, sims: Sims, provider: str) -> None:
    """The calls of one batch (a renewal message) are in flight at once, not one by one."""
    payments = [merchant.pay(provider, TOKENS[provider]["ok"]) for _ in range(3)]
    getattr(sims, provider).gate(MONEY_CALL[provider], parties=3)
    c = merchant.container
    assert c.config.provider_concurrency >= 3
    retry = charge.charge_payments(c.uow, c.providers, [p["id"] for p in payments],
                                   lease_seconds=c.config.payment_lease_seconds)
    assert retry == []
    for payment in payments:
        assert merchant.payment(payment["id"])["status"] == "succeeded"
        assert sims.ledger(provider, payment["id"]) == 1


def test_paypal_takes_huf_in_whole_units_and_declines_the_rest_before_calling(
    merchant: Merchant, sims: Sims
) -> None:
    adapter = merchant.container.providers.get("paypal", merchant.tenant_id)

    def request(amount: int) -> ChargeRequest:
        return charge_request(merchant, "paypal", amount=amount, currency="huf",
                              off_session=True)

    whole = request(150_000)  # 1,500 HUF
    assert adapter.charge(whole).status == "succeeded"
    [order] = [r for r in sims.paypal.requests_to("/v2/checkout/orders", "POST")
               if whole.payment_id.encode() in r.body]
    assert b'"value": "1500"' in order.body or b'"value":"1500"' in order.body
    fraction = request(150_050)  # 1,500.50 HUF: PayPal would answer DECIMAL_PRECISION
    with pytest.raises(PaymentDeclined) as declined:
        adapter.charge(fraction)
    assert (declined.value.code, declined.value.hard) == ("amount_not_supported", True)
    assert not [r for r in sims.paypal.requests_to("/v2/checkout/orders*")
                if fraction.payment_id.encode() in r.body]


REFUND_CALL = {"stripe": "/v1/refunds", "paypal": "/v2/payments/captures/*/refund"}


def refund_pending(merchant: Merchant, provider: str) -> tuple[str, str]:
    """A succeeded payment and a refund of part of it, recorded, not yet sent."""
    payment = merchant.charge(merchant.pay(provider, TOKENS[provider]["ok"])["id"])
    assert payment["status"] == "succeeded"
    api = merchant.api
    refund = api.ok(api.post(f"/payments/{payment['id']}/refunds", {"amount": 500}), 201)
    return payment["id"], refund["id"]


def refunded_at(sim: StripeSim | PayPalSim, refund_id: str) -> int:
    """How many refunds the provider made for our refund id."""
    return sum(1 for r in sim.refunds
               if (r.get("metadata") or {}).get("refund_id", r.get("custom_id")) == refund_id)


def process_refund(merchant: Merchant, refund_id: str) -> str:
    c = merchant.container
    refunds.process_refund(c.uow, c.providers, refund_id)
    return str(merchant.api.ok(merchant.api.get(f"/refunds/{refund_id}"), 200)["status"])


def date_refund_back(merchant: Merchant, provider: str, refund_id: str) -> None:
    _date_back(merchant, provider, update(Refund).where(Refund.id == refund_id))


@PROVIDERS
def test_a_refund_whose_answer_was_lost_is_found_not_sent_again_past_the_window(
    merchant: Merchant, sims: Sims, provider: str
) -> None:
    sim = getattr(sims, provider)
    _, refund_id = refund_pending(merchant, provider)
    sim.inject("lost", REFUND_CALL[provider], method="POST")  # refunded; answer lost
    assert process_refund(merchant, refund_id) == "pending"
    # Nothing ran for longer than the provider keeps keys: a re-send would refund again.
    getattr(sim, "forget_keys" if provider == "stripe" else "forget_request_ids")()
    date_refund_back(merchant, provider, refund_id)
    assert process_refund(merchant, refund_id) == "succeeded"  # found by our refund id
    assert refunded_at(sim, refund_id) == 1
    assert len(sim.requests_to(REFUND_CALL[provider], "POST")) == 1


@PROVIDERS
def test_a_refund_never_made_is_not_sent_past_the_window(
    merchant: Merchant, sims: Sims, provider: str
) -> None:
    sim = getattr(sims, provider)
    _, refund_id = refund_pending(merchant, provider)
    date_refund_back(merchant, provider, refund_id)
    assert process_refund(merchant, refund_id) == "pending"  # left for a person to check
    assert refunded_at(sim, refund_id) == 0
