"""Request and response schemas (pydantic): they validate requests and make the OpenAPI document.

Pydantic is the one schema library: it validates strictly (no "1999" for 1999, no 19.99),
reports every bad field at once, and emits JSON Schema 2020-12, which OpenAPI 3.1 uses as is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from app.billing.money import MAX_AMOUNT, MIN_AMOUNT, is_supported_currency
from app.models import PaymentStatus, Provider


def _clean_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def _currency(value: str) -> str:
    if not is_supported_currency(value):
        raise ValueError("must be a supported lowercase ISO 4217 code, e.g. 'usd'")
    return value


def _metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > 50:
        raise ValueError("at most 50 keys")
    return value


Text = Annotated[str, AfterValidator(_clean_text)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=40), AfterValidator(_clean_text)]
Amount = Annotated[StrictInt, Field(ge=MIN_AMOUNT, le=MAX_AMOUNT)]
Currency = Annotated[str, StringConstraints(min_length=3, max_length=3), AfterValidator(_currency)]
MetadataKey = Annotated[
    str, StringConstraints(min_length=1, max_length=40), AfterValidator(_clean_text)
]
MetadataValue = Annotated[str, StringConstraints(max_length=500), AfterValidator(_clean_text)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], AfterValidator(_metadata)]
Email = Annotated[Text, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PayRequest(Strict):
    amount: Amount
    currency: Currency
    customer_id: Id
    payment_method_id: Id
    description: Annotated[Text, StringConstraints(max_length=1000)] | None = None
    metadata: Metadata = Field(default_factory=dict)


class RefundRequest(Strict):
    amount: Amount | None = None


class CustomerRequest(Strict):
    email: Email | None = None
    name: Annotated[Text, StringConstraints(max_length=500)] | None = None
    metadata: Metadata = Field(default_factory=dict)


class PaymentMethodRequest(Strict):
    provider: Annotated[Provider, Field(strict=False)]
    token: Annotated[Text, StringConstraints(min_length=1, max_length=255)]


class ListQuery(Strict):
    model_config = ConfigDict(extra="forbid", strict=False)
    limit: Annotated[int, Field(ge=1, le=100)] = 10
    starting_after: Id | None = None


class PaymentListQuery(ListQuery):
    customer_id: Id | None = None
    subscription_id: Id | None = None
    status: PaymentStatus | None = None


class SandboxChargesQuery(Strict):
    model_config = ConfigDict(extra="forbid", strict=False)
    payment_id: Id | None = None


# Responses: documentation of what `app.render` produces (a test keeps the two in sync).


class Attempt(BaseModel):
    number: int
    status: str
    provider: str
    failure_code: str | None
    created_at: str


class Payment(BaseModel):
    id: str
    object: Literal["payment"]
    amount: int
    currency: str
    customer_id: str
    payment_method_id: str
    subscription_id: str | None
    status: PaymentStatus
    failure_code: str | None
    failure_message: str | None
    amount_refunded: int
    attempts: list[Attempt]
    description: str | None
    livemode: bool
    created_at: str
    updated_at: str
    metadata: dict[str, str]
    next_action: dict[str, Any] | None


class Customer(BaseModel):
    id: str
    object: Literal["customer"]
    email: str | None
    name: str | None
    metadata: dict[str, str]
    livemode: bool
    created_at: str


class PaymentMethod(BaseModel):
    id: str
    object: Literal["payment_method"]
    customer_id: str
    provider: Provider
    brand: str | None
    last4: str | None
    created_at: str


class Refund(BaseModel):
    id: str
    object: Literal["refund"]
    payment_id: str
    amount: int
    status: Literal["pending", "succeeded", "failed"]


class SandboxCharge(BaseModel):
    id: str
    payment_id: str
    idempotency_key: str
    amount: int
    currency: str
    created_at: str


class ProblemDetail(BaseModel):
    type: str
    title: str
    status: int
    code: str
    detail: str
    errors: list[dict[str, str]] | None = None
