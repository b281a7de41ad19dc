"""Typed SQLAlchemy 2 models and the unit of work."""

from app.models.base import Base
from app.models.customer import Customer, PaymentMethod, Provider
from app.models.idempotency import IdempotencyKey
from app.models.outbox import OutboxEvent
from app.models.payment import (
    AttemptStatus,
    Payment,
    PaymentAttempt,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from app.models.sandbox import SandboxCharge, SandboxRefund
from app.models.tenant import ApiKey, Tenant

__all__ = [
    "ApiKey",
    "AttemptStatus",
    "Base",
    "Customer",
    "IdempotencyKey",
    "OutboxEvent",
    "Payment",
    "PaymentAttempt",
    "PaymentMethod",
    "PaymentStatus",
    "Provider",
    "Refund",
    "RefundStatus",
    "SandboxCharge",
    "SandboxRefund",
    "Tenant",
]
