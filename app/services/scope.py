"""Who is asking: the tenant and mode every query is confined to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.models.base import TenantOwned
from app.services.errors import NotFound

T = TypeVar("T", bound=TenantOwned)


@dataclass(frozen=True)
class Scope:
    """A tenant in one mode; objects outside it do not exist for the caller."""

    tenant_id: str
    livemode: bool

    def query(self, model: type[T]) -> Select[T]:
        """SELECT of `model` confined to this tenant and mode; deleted objects are gone."""
        query = select(model).where(
            model.tenant_id == self.tenant_id, model.livemode == self.livemode
        )
        deleted_at = getattr(model, "deleted_at", None)  # customers, payment methods
        return query if deleted_at is None else query.where(deleted_at.is_(None))

    def get(self, session: Session, model: type[T], object_id: str, *, lock: bool = False) -> T:
        """The object with this id in scope, or NotFound (the same for other tenants' ids)."""
        query = self.query(model).where(model.id == object_id)
        if lock:
            query = query.with_for_update()
        found = session.scalar(query) if storable(object_id) else None
        if found is None:
            raise missing(model, object_id)
        return found

    def page(
        self,
        session: Session,
        model: type[T],
        *,
        limit: int,
        starting_after: str | None = None,
        filters: Mapping[str, object] | None = None,
    ) -> tuple[list[T], bool]:
        """One page of objects in scope, newest first (ids sort by creation), and has_more."""
        query = self.query(model)
        for name, value in (filters or {}).items():
            query = query.where(getattr(model, name) == value)
        if starting_after is not None:
            query = query.where(model.id < starting_after)
        rows = list(session.scalars(query.order_by(model.id.desc()).limit(limit + 1)))
        return rows[:limit], len(rows) > limit


def storable(object_id: str) -> bool:
    """Whether an id can be looked up: PostgreSQL refuses NUL in text, and no id has one, so
    such an id is simply missing."""
    return "\x00" not in object_id


def missing(model: type[TenantOwned], object_id: str) -> NotFound:
    """The error for an id that is not in scope (the same for other tenants' ids)."""
    return NotFound(f"No such {model.label}: '{object_id}'")
