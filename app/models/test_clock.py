"""Test clocks: simulated time for the customers created on them (test mode only)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, text
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
    __table_args__ = (
        Index("ix_test_clocks_advancing", "updated_at",
              postgresql_where=text("status = 'advancing'")),
    )

    frozen_time: Mapped[datetime]
    status: Mapped[ClockStatus] = mapped_column(enum_column(ClockStatus))
    #: While advancing: when its advance started, or the scheduler last looked for its
    #: message (`clocks.redrive_stalled`).
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    #: The generation of the advance messages that may drive the clock: bumped when an
    #: advance starts or the scheduler replaces a lost message, so the message it replaced
    #: is void (`clocks.driving`).
    generation: Mapped[int] = mapped_column(default=0, server_default="0")
