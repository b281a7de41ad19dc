"""Subscriptions: a customer billed for a plan, period after period."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.billing.subscription_state import Status
from app.clock import utcnow
from app.models.base import Base, TenantOwned, enum_column


class Subscription(TenantOwned, Base):
    __tablename__ = "subscriptions"
    label = "subscription"
    __table_args__ = (
        CheckConstraint("credit_balance >= 0", name="credit_non_negative"),
        CheckConstraint("current_period_end > current_period_start", name="period_order"),
        Index("ix_subscriptions_list", "tenant_id", "livemode", "id"),
        Index("ix_subscriptions_customer", "tenant_id", "livemode", "customer_id", "id"),
        Index("ix_subscriptions_status", "tenant_id", "livemode", "status", "id"),
        Index("ix_subscriptions_due", "next_event_at",
              postgresql_where=text("test_clock_id IS NULL AND next_event_at IS NOT NULL")),
        Index("ix_subscriptions_clock_due", "test_clock_id", "next_event_at",
              postgresql_where=text("test_clock_id IS NOT NULL AND next_event_at IS NOT NULL")),
    )

    customer_id: Mapped[str] = mapped_column(String(40), ForeignKey("customers.id"))
    plan_id: Mapped[str] = mapped_column(String(40), ForeignKey("plans.id"))
    payment_method_id: Mapped[str] = mapped_column(String(40), ForeignKey("payment_methods.id"))
    test_clock_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("test_clocks.id"))
    status: Mapped[Status] = mapped_column(enum_column(Status))
    billing_anchor: Mapped[datetime]
    current_period_start: Mapped[datetime]
    current_period_end: Mapped[datetime]
    trial_end: Mapped[datetime | None]
    trial_will_end_sent: Mapped[bool] = mapped_column(default=False)
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    canceled_at: Mapped[datetime | None]
    cancellation_reason: Mapped[str | None] = mapped_column(String(64))
    paused_at: Mapped[datetime | None]
    latest_payment_id: Mapped[str | None] = mapped_column(String(40))
    credit_balance: Mapped[int] = mapped_column(default=0)
    first_failure_at: Mapped[datetime | None]
    retry_at: Mapped[datetime | None]
    next_event_at: Mapped[datetime | None]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
