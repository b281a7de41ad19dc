"""Test clocks: simulated time for the customers created on them (test mode only)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy.orm import Mapped, mapped_column

from app.clock import utcnow
from app.models.base import Base, TenantOwned, enum_column


class ClockStatus(enum.StrEnum):
    READY = "ready"
    ADVANCING = "advancing"


class TestClock(TenantOwned, Base):
    __tablename__ = "test_clocks"
    __test__ = False  # not a pytest test class
    label = "test clock"

    frozen_time: Mapped[datetime]
    status: Mapped[ClockStatus] = mapped_column(enum_column(ClockStatus))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
