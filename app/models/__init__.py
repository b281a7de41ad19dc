"""Typed SQLAlchemy 2 models and the unit of work."""

from app.models.base import Base
from app.models.customer import Customer, PaymentMethod, Provider
from app.models.idempotency import IdempotencyKey
from app.models.mail import SentMail
from app.models.outbox import OutboxEvent
from app.models.payment import (
    AttemptStatus,
    Payment,
    PaymentAttempt,
    PaymentPurpose,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from app.models.plan import Plan
from app.models.provider_credential import ProviderCredential
from app.models.sandbox import SandboxCharge, SandboxRefund
from app.models.subscription import Subscription
from app.models.tenant import ApiKey, Tenant
from app.models.test_clock import ClockStatus, TestClock
from app.models.webhook import WebhookDelivery, WebhookEndpoint

__all__ = [
    "ApiKey",
    "AttemptStatus",
    "Base",
    "ClockStatus",
    "Customer",
    "IdempotencyKey",
    "OutboxEvent",
    "Payment",
    "PaymentAttempt",
    "PaymentMethod",
    "PaymentPurpose",
    "PaymentStatus",
    "Plan",
    "Provider",
    "ProviderCredential",
    "Refund",
    "RefundStatus",
    "SandboxCharge",
    "SandboxRefund",
    "SentMail",
    "Subscription",
    "Tenant",
    "TestClock",
    "WebhookDelivery",
    "WebhookEndpoint",
]
