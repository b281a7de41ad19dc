"""What `app.render` produces is exactly what the response models in the OpenAPI document say."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from app import render
from app.api import schemas
from app.models import (
    AttemptStatus,
    Customer,
    Payment,
    PaymentAttempt,
    PaymentMethod,
    PaymentStatus,
    Provider,
    Refund,
    RefundStatus,
)

times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
texts = st.text(max_size=20)
maybe_text = st.none() | texts
metadata = st.dictionaries(st.text(min_size=1, max_size=40), texts, max_size=3)


FEW = settings(max_examples=30, deadline=None)


def documented(output: dict[str, Any], model: type[BaseModel]) -> None:
    """Every rendered field is documented, every documented field rendered, types agree."""
    assert set(output) == set(model.model_fields), set(output) ^ set(model.model_fields)
    model.model_validate_json(json.dumps(output), strict=True)


@FEW
@given(texts, maybe_text, maybe_text, metadata, st.none() | st.just("clock_1"), st.booleans(),
       times)
def test_customer(
    id_: str, email: str | None, name: str | None, meta: dict[str, str], clock: str | None,
    livemode: bool, created: datetime,
) -> None:
    customer = Customer(id="cus_" + id_, tenant_id="ten_1", livemode=livemode, email=email,
                        name=name, metadata_=meta, test_clock_id=clock, created_at=created)
    documented(render.customer(customer), schemas.Customer)


@FEW
@given(st.sampled_from(Provider), maybe_text, st.none() | st.just("4242"), times)
def test_payment_method(provider: Provider, brand: str | None, last4: str | None,
                        created: datetime) -> None:
    method = PaymentMethod(id="pm_1", tenant_id="ten_1", livemode=False, customer_id="cus_1",
                           provider=provider, token="tok_ok", brand=brand, last4=last4,
                           created_at=created)
    documented(render.payment_method(method), schemas.PaymentMethod)


attempts = st.lists(
    st.builds(
        lambda number, status, code, created: PaymentAttempt(
            id=f"att_{number}", payment_id="pay_1", number=number, status=status,
            provider="sandbox", idempotency_key=f"pay_1:{number}", failure_code=code,
            created_at=created,
        ),
        st.integers(1, 10), st.sampled_from(AttemptStatus), maybe_text, times,
    ),
    max_size=4,
)


@FEW
@given(
    st.sampled_from(PaymentStatus), attempts, maybe_text, maybe_text, st.none() | st.just("sub_1"),
    st.none() | st.just({"type": "redirect_to_url", "redirect_url": "https://x.test/a"}),
    metadata, times, times,
)
def test_payment(
    status: PaymentStatus, tries: list[PaymentAttempt], code: str | None,
    description: str | None, subscription: str | None, next_action: dict[str, str] | None,
    meta: dict[str, str], created: datetime, updated: datetime,
) -> None:
    payment = Payment(
        id="pay_1", tenant_id="ten_1", livemode=False, customer_id="cus_1",
        payment_method_id="pm_1", subscription_id=subscription, amount=1999, currency="usd",
        status=status, failure_code=code, failure_message=code, amount_refunded=0,
        description=description, metadata_=meta, next_action=next_action, attempts=tries,
        created_at=created, updated_at=updated,
    )
    documented(render.payment(payment), schemas.Payment)


@FEW
@given(st.sampled_from(RefundStatus), st.integers(1, 99_999_999), times)
def test_refund(status: RefundStatus, amount: int, created: datetime) -> None:
    refund = Refund(id="re_1", tenant_id="ten_1", livemode=False, payment_id="pay_1",
                    amount=amount, status=status, created_at=created)
    documented(render.refund(refund), schemas.Refund)


def test_deleted() -> None:
    customer = Customer(id="cus_1", tenant_id="ten_1", livemode=False)
    method = PaymentMethod(id="pm_1", tenant_id="ten_1", livemode=False, customer_id="cus_1")
    for obj, kind in ((customer, "customer"), (method, "payment_method")):
        output = render.deleted(obj)
        documented(output, schemas.Deleted)
        assert output == {"id": obj.id, "object": kind, "deleted": True}


@given(st.datetimes(min_value=datetime(1000, 1, 1), timezones=st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])))
def test_timestamps_are_rfc3339_in_utc_to_the_second(value: datetime) -> None:
    assert render.timestamp(value) == value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
