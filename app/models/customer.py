"""Customers and their payment methods (provider-side references, never card numbers)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TenantOwned, enum_column


class Provider(enum.StrEnum):
    STRIPE = "stripe"
    PAYPAL = "paypal"
    SANDBOX = "sandbox"


class Customer(TenantOwned, Base):
    __tablename__ = "customers"
    label = "customer"
    __table_args__ = (Index("ix_customers_list", "tenant_id", "livemode", "id"),)

    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(500))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    test_clock_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("test_clocks.id"))
    #: Set when deleted: the row stays (its payments name it) with email and name erased.
    deleted_at: Mapped[datetime | None]


class PaymentMethod(TenantOwned, Base):
    __tablename__ = "payment_methods"
    label = "payment method"
    __table_args__ = (Index("ix_payment_methods_customer", "customer_id", "id"),)

    customer_id: Mapped[str] = mapped_column(String(40), ForeignKey("customers.id"))
    provider: Mapped[Provider] = mapped_column(enum_column(Provider))
    token: Mapped[str] = mapped_column(String(255))
    brand: Mapped[str | None] = mapped_column(String(32))
    last4: Mapped[str | None] = mapped_column(String(4))
    #: Set when detached (at the provider too): payments made with it still name it.
    deleted_at: Mapped[datetime | None]
