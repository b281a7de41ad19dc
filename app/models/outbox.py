"""The transactional outbox: events written with the change, relayed to Kafka later."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.clock import utcnow
from app.models.base import Base

#: Event types that send the customer a mail (the mail dispatcher's partial index).
MAIL_EVENT_TYPES = (
    "payment.succeeded",
    "payment.failed",
    "subscription.trial_will_end",
    "subscription.canceled",
)
MAIL_TYPES_SQL = ", ".join(f"'{t}'" for t in MAIL_EVENT_TYPES)


class OutboxEvent(Base):
    __tablename__ = "outbox_events"
    __table_args__ = (
        Index("ix_outbox_events_unsent", "id", postgresql_where=text("sent_at IS NULL")),
        Index("ix_outbox_events_sent_at", "sent_at", postgresql_where=text("sent_at IS NOT NULL")),
        Index(
            "ix_outbox_events_unmailed", "id",
            postgresql_where=text(f"mail_enqueued_at IS NULL AND type IN ({MAIL_TYPES_SQL})"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40), unique=True)
    topic: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(40))
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    sent_at: Mapped[datetime | None]
    #: When the mail dispatcher enqueued `send_mail` for it (mail-worthy types only).
    mail_enqueued_at: Mapped[datetime | None]
