"""charge_payment's window (app/services/charge_window.py): the young messages a worker process
takes within CHARGE_LINGER_MS name their payments in one claim, made by the window's first
message; the others are done once it is made, or raise its error."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.exc import OperationalError

from app.bootstrap import Container
from app.config import MAX_CHARGE_BATCH_SIZE, Config
from app.services.charge import Claim
from app.services.charge_window import Window

WINDOW = 0.05  # seconds


def test_the_messages_of_one_window_are_claimed_at_once_by_its_first() -> None:
    window, now = Window(), time.time()
    joined = [window.join(f"pay_{n}", now, WINDOW, size=32) for n in range(4)]
    assert [j.leads for j in joined if j] == [True, False, False, False]
    runs: list[list[str]] = []

    def claiming(payment_ids: list[str]) -> list[Claim]:
        runs.append(payment_ids)
        return []

    with ThreadPoolExecutor(3) as pool:
        others = [pool.submit(j.wait) for j in joined[1:] if j]
        assert joined[0] is not None and joined[0].claim(claiming) == []
        assert [o.result(timeout=10) for o in others] == [None] * 3
    assert runs == [["pay_0", "pay_1", "pay_2", "pay_3"]]
    later = window.join("pay_4", time.time(), WINDOW, size=32)
    assert later is not None and later.leads, "a closed window takes no one: the next opens"


def test_an_old_message_claims_alone_at_once_even_while_a_window_is_open() -> None:
    window = Window()
    young = window.join("pay_young", time.time(), WINDOW, size=32)
    assert young is not None and young.leads
    assert window.join("pay_old", time.time() - 2 * WINDOW, WINDOW, size=32) is None
    assert window.join("pay_new", time.time(), 0.0, size=32) is None, "lingering off"
    assert window.join("pay_new", time.time(), WINDOW, size=1) is None, "batches of one"
    assert window.join("pay_new", None, WINDOW, size=32) is None, "not from a worker"


def test_a_full_window_closes_and_the_next_message_opens_another() -> None:
    window, now = Window(), time.time()
    joined = [window.join(f"pay_{n}", now, 10.0, size=3) for n in range(4)]
    assert [j.leads for j in joined if j] == [True, False, False, True]
    assert joined[0] and joined[3] and joined[0].batch.payment_ids == ["pay_0", "pay_1", "pay_2"]


def test_the_lead_s_failed_claim_is_raised_by_every_message_of_the_window_and_retried() -> None:
    window, now = Window(), time.time()
    lead, other = window.join("pay_a", now, WINDOW, 32), window.join("pay_b", now, WINDOW, 32)
    assert lead is not None and other is not None
    down = OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    def claiming(payment_ids: list[str]) -> list[Claim]:
        raise down

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(other.wait)
        with pytest.raises(OperationalError):
            lead.claim(claiming)
        with pytest.raises(OperationalError) as raised:
            waiting.result(timeout=10)
    retry_when = Container(Config()).retries.retry_when
    assert retry_when is not None and retry_when(0, raised.value), "transient: retried"


@pytest.mark.parametrize("size", [0, MAX_CHARGE_BATCH_SIZE + 1])
def test_a_batch_size_a_claim_cannot_number_is_refused_at_start(size: int) -> None:
    with pytest.raises(ValueError, match="CHARGE_BATCH_SIZE must be 1 to 1023"):
        Config.from_env({"CHARGE_BATCH_SIZE": str(size)})
