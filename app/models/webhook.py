"""Webhook endpoints (merchants' receivers) and the deliveries of events to them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.clock import utcnow
from app.models.base import Base, TenantOwned


class WebhookEndpoint(TenantOwned, Base):
    """Where one tenant's events of one mode are POSTed; the signing secret is sealed."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        Index("ix_webhook_endpoints_live", "tenant_id", "livemode",
              postgresql_where=text("deleted_at IS NULL")),
    )
    label = "webhook endpoint"

    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    description: Mapped[str | None] = mapped_column(String(500))
    #: The `whsec_…` secret, sealed with CREDENTIALS_KEY (app/providers/credentials.Sealer).
    secret_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    deleted_at: Mapped[datetime | None]


class WebhookDelivery(TenantOwned, Base):
    """One event for one endpoint: sent until a 2xx, on the contract's retry schedule."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        Index("ix_webhook_deliveries_due", "endpoint_id", "next_attempt_at",
              postgresql_where=text("status = 'pending'")),
    )
    label = "webhook delivery"

    endpoint_id: Mapped[str] = mapped_column(String(40), ForeignKey("webhook_endpoints.id"))
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(64))
    #: The event exactly as it was on Kafka: the body of every try.
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    last_status_code: Mapped[int | None]
    next_attempt_at: Mapped[datetime | None]
    #: A worker sending it holds it until then; another may take it only after.
    lease_until: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
