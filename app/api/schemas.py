"""Request and response schemas (pydantic): they validate requests and make the OpenAPI document.

Pydantic is the one schema library: it validates strictly (no "1999" for 1999, no 19.99),
reports every bad field at once, and emits JSON Schema 2020-12, which OpenAPI 3.1 uses as is.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)

from app.billing.money import CURRENCY_EXPONENTS, MAX_AMOUNT, MIN_AMOUNT, is_supported_currency
from app.billing.subscription_state import Status
from app.events.outbox import EVENT_TYPES
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


#: An RFC 3339 time from 1971 to 8999 (what _utc accepts, whatever the offset), to the
#: microsecond: the one form of time the API takes.
RFC3339 = (
    r"^(197[1-9]|19[89]\d|[2-8]\d{3})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-](0\d|1[0-4]):[0-5]\d)$"
)


def _rfc3339(value: Any) -> Any:
    """Only strings in RFC 3339 form are times (no numbers: 0 is not 1970)."""
    if not isinstance(value, str) or not re.fullmatch(RFC3339, value):
        raise ValueError("must be an RFC 3339 time string, e.g. '2026-01-31T00:00:00Z'")
    return value


def _utc(value: datetime) -> datetime:
    if not (datetime(1970, 1, 1, tzinfo=UTC) <= value <= datetime(9000, 1, 1, tzinfo=UTC)):
        raise ValueError("must be between 1970 and 9000")
    return value.astimezone(UTC)


#: No NUL character (PostgreSQL refuses them): said in the schema, enforced by _clean_text too.
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, StringConstraints(pattern=NO_NUL), AfterValidator(_clean_text)]
Id = Annotated[Text, StringConstraints(min_length=1, max_length=40)]
Amount = Annotated[StrictInt, Field(ge=MIN_AMOUNT, le=MAX_AMOUNT)]
Currency = Annotated[
    str,
    AfterValidator(_currency),
    WithJsonSchema({"type": "string", "enum": sorted(CURRENCY_EXPONENTS),
                    "description": "Lowercase ISO 4217 code"}),
]
Time = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    Field(strict=False),
    AfterValidator(_utc),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339,
                    "examples": ["2026-01-31T00:00:00Z"]}),
]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=40),
                        AfterValidator(_clean_text)]
MetadataValue = Annotated[str, StringConstraints(max_length=500), AfterValidator(_clean_text)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    Field(max_length=50),
    WithJsonSchema({
        "type": "object", "maxProperties": 50,
        "propertyNames": {"type": "string", "minLength": 1, "maxLength": 40, "pattern": NO_NUL},
        "additionalProperties": {"type": "string", "maxLength": 500, "pattern": NO_NUL},
    }),
]
Email = Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$"),
                  AfterValidator(_clean_text)]


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
    test_clock_id: Id | None = None


class CustomerUpdateRequest(Strict):
    """Only the fields sent change; `null` clears email or name."""

    email: Email | None = None
    name: Annotated[Text, StringConstraints(max_length=500)] | None = None
    metadata: Metadata = Field(
        default_factory=dict, description='Merged into the current keys; "" removes a key.'
    )


class PlanRequest(Strict):
    code: Annotated[str, StringConstraints(min_length=1, max_length=100,
                                           pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    name: Annotated[Text, StringConstraints(min_length=1, max_length=500)]
    amount: Amount
    currency: Currency
    interval: Literal["day", "week", "month", "year"]
    interval_count: Annotated[StrictInt, Field(ge=1, le=12)] = 1
    trial_days: Annotated[StrictInt, Field(ge=0, le=730)] = 0


class SubscriptionRequest(Strict):
    customer_id: Id
    plan_id: Id
    payment_method_id: Id
    trial_days: Annotated[StrictInt, Field(ge=0, le=730)] | None = None
    metadata: Metadata = Field(default_factory=dict)


class SubscriptionUpdateRequest(Strict):
    payment_method_id: Id | None = Field(
        None, description="One of the customer's payment methods: renewals and the "
        "remaining dunning retries charge it."
    )
    metadata: Metadata = Field(
        default_factory=dict, description='Merged into the current keys; "" removes a key.'
    )


class CancelRequest(Strict):
    at_period_end: bool = False


class ChangePlanRequest(Strict):
    plan_id: Id
    proration: Literal["create_prorations", "none"] = "create_prorations"


class TestClockRequest(Strict):
    __test__ = False  # not a pytest test class
    frozen_time: Time


class PaymentMethodRequest(Strict):
    provider: Annotated[Provider, Field(strict=False)]
    token: Annotated[Text, StringConstraints(min_length=1, max_length=255)]


EventType = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    WithJsonSchema({"type": "string", "enum": [*sorted(EVENT_TYPES), "*"]}),
]


class WebhookEndpointRequest(Strict):
    url: Annotated[Text, StringConstraints(min_length=1, max_length=2048)]
    event_types: Annotated[list[EventType], Field(min_length=1, max_length=50)]
    description: Annotated[Text, StringConstraints(max_length=500)] | None = None


class ListQuery(Strict):
    model_config = ConfigDict(extra="forbid", strict=False)
    limit: Annotated[int, Field(ge=1, le=100)] = 10
    starting_after: Id | None = None


class PaymentListQuery(ListQuery):
    customer_id: Id | None = None
    subscription_id: Id | None = None
    status: PaymentStatus | None = None


class SubscriptionListQuery(ListQuery):
    customer_id: Id | None = None
    status: Status | None = None


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
    test_clock_id: str | None
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
    created_at: str


class Plan(BaseModel):
    id: str
    object: Literal["plan"]
    code: str
    name: str
    amount: int
    currency: str
    interval: Literal["day", "week", "month", "year"]
    interval_count: int
    trial_days: int
    archived: bool
    livemode: bool
    created_at: str


class Subscription(BaseModel):
    id: str
    object: Literal["subscription"]
    customer_id: str
    plan_id: str
    payment_method_id: str
    status: Status
    current_period_start: str
    current_period_end: str
    billing_anchor: str
    trial_end: str | None
    cancel_at_period_end: bool
    canceled_at: str | None
    cancellation_reason: str | None
    paused_at: str | None
    latest_payment_id: str | None
    credit_balance: int
    test_clock_id: str | None
    livemode: bool
    created_at: str
    metadata: dict[str, str]


class TestClock(BaseModel):
    __test__ = False  # not a pytest test class
    id: str
    object: Literal["test_clock"]
    frozen_time: str
    status: Literal["ready", "advancing"]
    livemode: bool
    created_at: str


class WebhookEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint"]
    url: str
    event_types: list[str]
    description: str | None
    status: Literal["enabled"]
    livemode: bool
    created_at: str


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str


class WebhookDelivery(BaseModel):
    id: str
    object: Literal["webhook_delivery"]
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    last_status_code: int | None
    next_attempt_at: str | None
    created_at: str


class Deleted(BaseModel):
    id: str
    object: Literal["customer", "payment_method", "webhook_endpoint"]
    deleted: Literal[True]


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
