"""Who is asking: the tenant and mode every query is confined to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.interfaces import ORMOption

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

    def get(self, session: Session, model: type[T], object_id: str, *, lock: bool = False,
            options: Sequence[ORMOption] = ()) -> T:
        """The object with this id in scope, or NotFound (the same for other tenants' ids);
        `options` of the query (e.g. joinedload of a collection)."""
        query = self.query(model).where(model.id == object_id).options(*options)
        if lock:
            query = query.with_for_update()
        # PostgreSQL refuses NUL in text; no id has one, so such an id is simply missing.
        found = None if "\x00" in object_id else session.scalars(query).unique().one_or_none()
        if found is None:
            raise NotFound(f"No such {model.label}: '{object_id}'")
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
