"""Payments, their provider attempts and refunds."""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    func,
    inspect,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.orm.attributes import set_committed_value

from app.clock import utcnow
from app.models.base import Base, TenantOwned, enum_column


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REQUIRES_ACTION = "requires_action"
    UNKNOWN = "unknown"


class PaymentPurpose(enum.StrEnum):
    ONE_TIME = "one_time"
    CYCLE = "cycle"  # the charge of one subscription period
    PRORATION = "proration"  # the net charge of a mid-period plan change


class AttemptStatus(enum.StrEnum):
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REQUIRES_ACTION = "requires_action"
    UNKNOWN = "unknown"


class RefundStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Payment(TenantOwned, Base):
    __tablename__ = "payments"
    label = "payment"
    __table_args__ = (
        CheckConstraint("amount BETWEEN 1 AND 99999999", name="amount_range"),
        CheckConstraint("currency ~ '^[a-z]{3}$'", name="currency_format"),
        CheckConstraint("amount_refunded BETWEEN 0 AND amount", name="refund_range"),
        Index("ix_payments_list", "tenant_id", "livemode", "id"),
        Index("ix_payments_customer", "tenant_id", "livemode", "customer_id", "id"),
        Index("ix_payments_subscription", "tenant_id", "livemode", "subscription_id", "id"),
        Index("ix_payments_status", "tenant_id", "livemode", "status", "id"),
        Index(
            "uq_payments_cycle",
            "subscription_id",
            "period_start",
            unique=True,
            postgresql_where=text("purpose = 'cycle'"),
        ),
        CheckConstraint(
            "(purpose = 'one_time') = (subscription_id IS NULL)", name="subscription_purpose"
        ),
        CheckConstraint("purpose <> 'cycle' OR period_start IS NOT NULL", name="cycle_period"),
        Index(
            "ix_payments_unsettled",
            "updated_at",
            postgresql_where=text("status IN ('pending', 'processing', 'unknown')"),
        ),
    )

    customer_id: Mapped[str] = mapped_column(String(40), ForeignKey("customers.id"))
    payment_method_id: Mapped[str] = mapped_column(String(40), ForeignKey("payment_methods.id"))
    subscription_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("subscriptions.id"))
    purpose: Mapped[PaymentPurpose] = mapped_column(
        enum_column(PaymentPurpose), default=PaymentPurpose.ONE_TIME
    )
    period_start: Mapped[datetime | None]
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[PaymentStatus] = mapped_column(enum_column(PaymentStatus))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(String(500))
    amount_refunded: Mapped[int] = mapped_column(default=0)
    description: Mapped[str | None] = mapped_column(String(1000))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    next_action: Mapped[dict[str, Any] | None]
    lease_until: Mapped[datetime | None]
    #: Who holds the lease: the claim whose worker keeps it alive while it sends the attempt.
    lease_owner: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    #: Read only: a claim inserts its attempt itself (`UnitOfWork.insert`), so a flush of
    #: payments never walks their attempts (a tenth of a renewal's CPU in bench/renewals.py).
    attempts: Mapped[list[PaymentAttempt]] = relationship(
        order_by="PaymentAttempt.number", lazy="selectin", viewonly=True
    )


class PaymentAttempt(Base):
    __tablename__ = "payment_attempts"
    __table_args__ = (UniqueConstraint("payment_id", "number"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(40), ForeignKey("payments.id"))
    number: Mapped[int] = mapped_column(CheckConstraint("number >= 1", name="number_positive"))
    status: Mapped[AttemptStatus] = mapped_column(enum_column(AttemptStatus))
    provider: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    provider_reference: Mapped[str | None] = mapped_column(String(255))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class Refund(TenantOwned, Base):
    __tablename__ = "refunds"
    label = "refund"
    __table_args__ = (
        CheckConstraint("amount BETWEEN 1 AND 99999999", name="amount_range"),
        Index("ix_refunds_payment", "payment_id", "id"),
        Index("ix_refunds_pending", "id", postgresql_where=text("status = 'pending'")),
    )

    payment_id: Mapped[str] = mapped_column(String(40), ForeignKey("payments.id"))
    amount: Mapped[int]
    status: Mapped[RefundStatus] = mapped_column(enum_column(RefundStatus))
    provider_reference: Mapped[str | None] = mapped_column(String(255))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )


@functools.cache
def row_layout() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The attribute keys of a payment's columns, then of an attempt's, in mapper order: the
    layout of the rows `loaded` takes (read once the mappers are configured)."""
    return (tuple(prop.key for prop in inspect(Payment).column_attrs),
            tuple(prop.key for prop in inspect(PaymentAttempt).column_attrs))


def loaded(rows: Sequence[Sequence[Any]]) -> Payment:
    """The payment of rows laid out as `row_layout` says, one per attempt (the attempt's
    fields NULL when it has none), with its attempts, as a query loads them: no session,
    no collection events (a hot path: GET /payments/{id}, the worker's settle)."""
    payment_fields, attempt_fields = row_layout()
    n = len(payment_fields)
    payment = Payment(**dict(zip(payment_fields, rows[0][:n], strict=True)))
    set_committed_value(payment, "attempts", [
        PaymentAttempt(**dict(zip(attempt_fields, row[n:], strict=True)))
        for row in rows if row[n] is not None])
    return payment
