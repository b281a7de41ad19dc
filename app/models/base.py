"""Declarative base, shared column types and the mixin every tenant-owned object has."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, DateTime, Enum, ForeignKey, MetaData, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from app.clock import utcnow

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every model; constraint names are deterministic for Alembic."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        int: BigInteger,
    }


def enum_column(kind: type[enum.Enum]) -> Enum:
    """A VARCHAR column holding the enum's *value*, guarded by a CHECK constraint."""
    return Enum(
        kind,
        values_callable=lambda members: [m.value for m in members],
        native_enum=False,
        create_constraint=True,
        length=32,
        name=kind.__name__.lower(),
        validate_strings=True,
    )


class TenantOwned:
    """Columns of an object that belongs to one tenant in one mode (test or live)."""

    label: ClassVar[str] = "object"  # how error messages name the kind, e.g. "payment"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    livemode: Mapped[bool]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())

    @declared_attr
    def tenant_id(cls) -> Mapped[str]:
        return mapped_column(String(40), ForeignKey("tenants.id"), index=False)
