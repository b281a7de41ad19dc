"""Mail sent to customers: one row per (event, kind), the dedupe key of the mail actor."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Identity, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from app.clock import utcnow
from app.models.base import Base


class SentMail(Base):
    """A mail that left for the SMTP server (or was skipped); its (event_id, kind) is never
    sent again."""

    __tablename__ = "sent_mails"
    __table_args__ = (UniqueConstraint("event_id", "kind"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(40))
    tenant_id: Mapped[str] = mapped_column(String(40), index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[str] = mapped_column(String(200))
    #: `sent`, or `skipped`: test-mode mail while TEST_MAIL_SERVER is unset (never sent).
    status: Mapped[str] = mapped_column(String(16), default="sent", server_default="sent")
    sent_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
