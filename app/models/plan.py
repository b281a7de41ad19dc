"""Plans: what a subscription bills, and how often."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.billing.periods import Interval
from app.models.base import Base, TenantOwned


class Plan(TenantOwned, Base):
    __tablename__ = "plans"
    label = "plan"
    __table_args__ = (
        UniqueConstraint("tenant_id", "livemode", "code"),
        CheckConstraint("amount BETWEEN 1 AND 99999999", name="amount_range"),
        CheckConstraint("currency ~ '^[a-z]{3}$'", name="currency_format"),
        CheckConstraint("interval IN ('day', 'week', 'month', 'year')", name="interval_kind"),
        CheckConstraint("interval_count BETWEEN 1 AND 12", name="interval_count_range"),
        CheckConstraint("trial_days BETWEEN 0 AND 730", name="trial_days_range"),
        Index("ix_plans_list", "tenant_id", "livemode", "id"),
    )

    code: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(500))
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    interval: Mapped[Interval] = mapped_column(String(8))
    interval_count: Mapped[int] = mapped_column(SmallInteger)
    trial_days: Mapped[int] = mapped_column(SmallInteger, default=0)
    archived_at: Mapped[datetime | None]
