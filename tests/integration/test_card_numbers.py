"""Raw card numbers sent as payment-method tokens are refused, and never stored or echoed."""

from __future__ import annotations

import logging
import uuid

import pytest

from app.bootstrap import Container
from tests.integration.checks import assert_problem, error_fields, rows, stored_text
from tests.support import Api

CARD_NUMBERS = [
    "4242 4242 4242 4242",
    "4242-4242-4242-4242",
    "4000056655665556",
    "4242424242424242",
    "378282246310005",
    "6011 1111 1111 1117",
    "tok_4111111111111111",
    "4111 1111-1111 1111",
]


@pytest.mark.parametrize("number", CARD_NUMBERS)
@pytest.mark.parametrize("provider", ["sandbox", "stripe", "paypal"])
def test_a_raw_card_number_is_refused_and_never_kept(
    api: Api, container: Container, caplog: pytest.LogCaptureFixture, number: str, provider: str
) -> None:
    customer = api.customer()
    before = rows(container, api.tenant_id)
    with caplog.at_level(logging.DEBUG):
        response = api.post(
            f"/customers/{customer['id']}/payment-methods",
            {"provider": provider, "token": number},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
    problem = assert_problem(response, 422, "raw_card_number")
    assert error_fields(problem) == {"token"}
    digits = "".join(c for c in number if c.isdigit())
    answer = response.get_data(as_text=True)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    kept = stored_text(container)
    for text in (answer, logged, kept):
        assert number not in text
        assert digits not in text
    assert rows(container, api.tenant_id) == before


@pytest.mark.parametrize("token", ["4242424242424241", "4242 4242 4242 4241", "1234567812345678"])
def test_a_luhn_invalid_number_is_not_taken_for_a_card(
    api: Api, container: Container, token: str
) -> None:
    """It is an unknown sandbox token instead: 422 all the same, with another code."""
    customer = api.customer()
    before = rows(container, api.tenant_id)
    body = {"provider": "sandbox", "token": token}
    response = api.post(f"/customers/{customer['id']}/payment-methods", body)
    problem = assert_problem(response, 422, "invalid_payment_method")
    assert error_fields(problem) == {"token"}
    assert rows(container, api.tenant_id) == before
