"""A lease shorter than the provider's answer: the attempt is never sent again meanwhile.

The worker that sends an attempt keeps its payment's lease alive (app/services/lease.py),
so another worker (reconciliation's re-drive, a redelivered message) claiming the same
payment over and over while the provider takes several seconds gets nothing to send, for
a one-time payment and for a renewal batch alike, with a lease of one second. And when the
retries run out, an attempt that may have been sent makes the payment `unknown`, never
`failed`.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from app.bootstrap import Container
from app.clock import utcnow
from app.config import Config
from app.models import Payment, PaymentStatus, Subscription
from app.services import charge, renewals
from tests.integration.test_provider_faults import MONEY_CALL, keys_sent, statuses
from tests.integration.test_scheduler import (
    assert_renewed_exactly_once,
    cycle_payments,
    make_due,
    subscribe_many,
)
from tests.sim.fixtures import Merchant, Sims, sim_config_for
from tests.support import Api, eventually

LEASE = 1


@pytest.fixture(scope="module")
def sim_config(config: Config, sims: Sims) -> Config:
    """Provider answers may take seconds here, far longer than the lease."""
    return sim_config_for(config, sims, "lease", provider_timeout_seconds=10.0,
                          payment_lease_seconds=LEASE)


def others_claim_until_done(container: Container, first: Future[Any],
                            payment_ids: Callable[[], list[str]]) -> int:
    """Another worker claims the payments again and again while `first` sends them; each
    time it must find nothing to send and leave them `processing`. Returns its tries."""
    tries = 0
    while not first.done():
        ids = payment_ids()
        assert charge.charge_payments(container.uow, container.providers, ids,
                                      lease_seconds=LEASE) == []
        with container.session_factory() as session:
            statuses = {session.get_one(Payment, pid).status for pid in ids}
        assert PaymentStatus.UNKNOWN not in statuses, "another worker sent it again"
        tries += 1
        time.sleep(0.1)
    return tries


def test_a_one_time_payment_slower_than_its_lease_is_sent_once(
    merchant: Merchant, sims: Sims
) -> None:
    c = merchant.container
    payment = merchant.pay("stripe", "pm_card_visa")
    sims.stripe.inject("delay", MONEY_CALL["stripe"], seconds=4 * LEASE)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(charge.charge_payments, c.uow, c.providers, [payment["id"]],
                            lease_seconds=LEASE)
        eventually(lambda: merchant.payment(payment["id"])["status"] == "processing",
                   what="the first worker's claim")
        tries = others_claim_until_done(c, first, lambda: [payment["id"]])
        assert first.result() == []
    assert tries > 10 * LEASE
    assert merchant.payment(payment["id"])["status"] == "succeeded"
    assert keys_sent(sims.stripe, "stripe", payment["id"]) == [f"{payment['id']}:1"]
    assert sims.ledger("stripe", payment["id"]) == 1


def test_a_renewal_batch_slower_than_its_lease_is_sent_once(
    api: Api, worker: subprocess.Popen[bytes], container: Container
) -> None:
    sub_ids = subscribe_many(api, 3)
    customer_id = api.get(f"/subscriptions/{sub_ids[0]}").get_json()["customer_id"]
    slow = api.payment_method(customer_id, "tok_slow_4")  # the sandbox answers 4 s late
    with container.session_factory() as session:  # as POST /subscriptions/{id} would
        session.execute(update(Subscription).where(Subscription.id.in_(sub_ids))
                        .values(payment_method_id=slow["id"]))
        session.commit()
    end = make_due(container, sub_ids)

    def renewal_ids() -> list[str]:
        return [p.id for p in cycle_payments(container, sub_ids) if p.period_start == end]

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(renewals.run_due, container.uow, container.providers, sub_ids,
                            utcnow(), lease_seconds=LEASE)
        eventually(lambda: len(renewal_ids()) == len(sub_ids), what="the renewal payments")
        tries = others_claim_until_done(container, first, renewal_ids)
        assert first.result().to_retry == []
    assert tries > 10 * LEASE
    assert_renewed_exactly_once(container, sub_ids, end)


def test_retries_running_out_after_the_attempt_was_sent_leave_it_unknown_not_failed(
    merchant: Merchant, sims: Sims
) -> None:
    """The worker sent the attempt (Stripe charged), then could not record the answer until
    its retries ran out (a long database outage). Nothing says the charge failed: the
    payment is `unknown`, and reconciliation finds the charge."""
    c = merchant.container
    payment = merchant.pay("stripe", "pm_card_visa")
    [claim] = charge.claim(c.uow, [payment["id"]], LEASE)  # the worker's claim, committed
    adapter = c.providers.get("stripe", merchant.tenant_id)
    assert adapter.charge(claim.request).status == "succeeded"  # sent; never recorded
    eventually(lambda: merchant.updated_at(payment["id"]) < utcnow() - timedelta(seconds=LEASE)
               and merchant.payment(payment["id"])["status"] == "processing",
               what="the dead worker's lease to lapse")
    charge.give_up(c.uow, payment["id"])  # Dramatiq: retries exhausted
    gave_up = merchant.payment(payment["id"])
    assert (gave_up["status"], statuses(gave_up)) == ("unknown", ["unknown"])
    assert merchant.reconcile(payment["id"])["status"] == "succeeded"
    assert sims.ledger("stripe", payment["id"]) == 1


def test_retries_running_out_before_anything_was_sent_fail_the_payment(
    merchant: Merchant, sims: Sims
) -> None:
    c = merchant.container
    payment = merchant.pay("stripe", "pm_card_visa")
    sims.stripe.inject("500", "/v1/payment_methods/*", count=2)  # nothing charged
    for _ in range(2):
        merchant.charge(payment["id"])
    charge.give_up(c.uow, payment["id"])
    failed = merchant.payment(payment["id"])
    assert (failed["status"], failed["failure_code"]) == ("failed", "provider_unavailable")
    assert statuses(failed) == ["failed", "failed"]
    assert sims.ledger("stripe", payment["id"]) == 0
