"""A tenant's provider credentials (API keys, webhook secrets), stored only encrypted."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.clock import utcnow
from app.models.base import Base


class ProviderCredential(Base):
    """One provider's secrets for one tenant and mode, sealed with Fernet (CREDENTIALS_KEY)."""

    __tablename__ = "provider_credentials"

    tenant_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("tenants.id"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    livemode: Mapped[bool] = mapped_column(primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )
